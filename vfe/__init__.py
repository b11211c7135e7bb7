"""vfe: a self-hosted video frame extraction service."""

__version__ = "0.1.0"
# Part of every reuse key, with the version: raised when the frames vfe writes for the
# same request change between versions of one number (2: non-square pixels are shown at
# their display shape; 3: keyframes of AVI with B-frames; 4: interlaced video shown
# deinterlaced), so no job reuses frames made the old way.
FRAMES_REVISION = 4

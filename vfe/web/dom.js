// Building DOM nodes. There is no HTML string anywhere: every value becomes a text node
// or an attribute, so whatever the server sends (a video_source like
// `<img src=x onerror=alert(1)>`) is shown as text.

/**
 * el('li', {class: 'row', dataset: {index: 3}, text: 'hi'}, child, 'more text')
 * Props: class, text, dataset, on<event> (a listener), any other attribute
 * (true gives an empty attribute; null, undefined and false leave it out).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** The element with data-testid `id` inside `root`. */
export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${CSS.escape(id)}"]`);
}

/** Set an element's text only when it changes (keeps screen readers and selection calm). */
export function setText(node, text) {
  const value = text ?? '';
  if (node.textContent !== value) node.textContent = value;
}

/**
 * An image in a box (data-testid frame-image) that shows a neutral placeholder until the
 * image has loaded, and says so when it cannot be loaded: see watchImage.
 */
export function imageBox(imageProps) {
  const image = el('img', imageProps);
  const box = el(
    'span',
    { class: 'frame-image', 'data-testid': 'frame-image' },
    image,
    el('span', { class: 'image-broken', text: 'Image not available' }),
  );
  watchImage(image, box);
  return box;
}

/**
 * Keep `box.dataset.image` in step with `image`: loading, loaded or broken. The CSS
 * shows the placeholder, the image or the broken state from it. Whoever changes the
 * image's src sets it back to loading.
 */
export function watchImage(image, box) {
  box.dataset.image = image.complete && image.naturalWidth > 0 ? 'loaded' : 'loading';
  image.addEventListener('load', () => {
    box.dataset.image = 'loaded';
  });
  image.addEventListener('error', () => {
    box.dataset.image = 'broken';
  });
}

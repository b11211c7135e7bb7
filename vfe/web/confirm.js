// A yes/no question in the confirm <dialog>. Its buttons sit in a <form method=dialog>,
// so a choice closes it with returnValue "yes" or "no"; Escape closes it with neither.
import { byTestId, setText } from './dom.js';

/** Ask in `dialog`; resolves to true only when the person chose yes. */
export function ask(dialog, { title, text, yes, no }) {
  setText(dialog.querySelector('h2'), title);
  setText(dialog.querySelector('.confirm-text'), text);
  setText(byTestId('confirm-yes', dialog), yes);
  setText(byTestId('confirm-no', dialog), no);
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
    dialog.showModal();
  });
}

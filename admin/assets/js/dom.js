// Building page elements from data: text always goes in as text, never as markup.

/** A `tag` element with `className` and, unless null or undefined, `value` as its text. */
export function el(tag, className, value) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (value !== undefined && value !== null) node.textContent = value;
  return node;
}

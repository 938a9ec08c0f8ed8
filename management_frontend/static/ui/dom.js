// Building the DOM from data: text goes in with textContent, never innerHTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fmt(value, digits = 1, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const n = Number(value);
  const text = Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(digits);
  return unit ? `${text} ${unit}` : text;
}

export function pct(value) {
  if (value === null || value === undefined) return "–";
  return `${(Number(value) * 100).toFixed(1)} %`;
}

export function stateClass(replica) {
  if (!replica.connected) return "bad";
  if (replica.state && replica.state !== "ok") return "warn";
  return replica.in_rotation === false ? "warn" : "ok";
}

export function when(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString();
}

// Draws the snapshot/clone families as trees: a root VDI, then what was snapshotted or cloned from
// it, nested. Built with DOM nodes and textContent only: VDI names are user input.

/** @param {HTMLElement} el @param {Array<object>} families from /api/vdis */
export function renderFamilies(el, families) {
  el.replaceChildren();
  if (!families.length) {
    const p = document.createElement('p');
    p.className = 'quiet';
    p.textContent = 'no VDIs';
    el.append(p);
    return;
  }
  const list = document.createElement('ul');
  list.className = 'tree';
  for (const f of families) list.append(item(f));
  el.append(list);
}

function item(v) {
  const li = document.createElement('li');
  const box = document.createElement('span');
  box.className = `vdi ${v.snapshot ? 'snapshot' : 'working'}`;
  box.title = `VDI id ${v.vid.toString(16)}${v.snapshot ? `, snapshot ${v.snapId}` : ''}`;
  const name = document.createElement('b');
  name.textContent = v.name;
  box.append(name);
  const info = document.createElement('small');
  info.textContent = v.snapshot ? ` snapshot ${v.snapId}${v.tag ? ` “${v.tag}”` : ''}` : ' working';
  box.append(info);
  li.append(box);
  if (v.children.length) {
    const ul = document.createElement('ul');
    for (const c of v.children) ul.append(item(c));
    li.append(ul);
  }
  return li;
}

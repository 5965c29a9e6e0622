// collie pads table columns by display width, so names in any script line up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { displayWidth, padL, renderTable, type Column } from '../../collie/common.js';

test('ASCII takes one column per character', () => {
  assert.equal(displayWidth('disk.img'), 8);
});

test('CJK and fullwidth characters take two columns, combining marks none', () => {
  assert.equal(displayWidth('日本語'), 6);
  assert.equal(displayWidth('ＡＢ'), 4);
  assert.equal(displayWidth('e\u0301'), 1); // e + combining acute
});

test('padding fills to the same display width whatever the script', () => {
  const cols: Column[] = [{ width: 8 }, {}];
  const [cjk, ascii] = renderTable(cols, [['日本', 'x'], ['abcd', 'x']]).split('\n');
  assert.equal(displayWidth(cjk), 10);
  assert.equal(displayWidth(ascii), 10);
  assert.equal(cjk, '日本     x');
  assert.equal(padL('語', 4), '  語');
  assert.equal(renderTable([{ width: 4 }, {}], [['toolongname', 'x']]), 'toolongname x\n');
});

test('tables keep displayWidth columns where cli-table3 measures otherwise (emoji, marks)', () => {
  const cols: Column[] = [{ width: 8 }, { width: 4, align: 'right' }];
  for (const name of ['🚀', '✅', '👨‍👩‍👧', 'नमस्ते', 'a\u200bb', '日本語']) {
    const pad = ' '.repeat(8 - displayWidth(name));
    assert.equal(renderTable(cols, [[name, 'x']]), `${name}${pad}    x\n`, name);
  }
});

test('table gaps are per column; an empty last cell without a width prints nothing', () => {
  const cols: Column[] = [{ width: 2, align: 'right' }, { gap: '\t' }, { gap: '\t' }];
  assert.equal(renderTable(cols, [[1, '79 GB', 'disk failed'], [2, '79 GB', ''], ['Total', '158 GB']]), ' 1\t79 GB\tdisk failed\n 2\t79 GB\nTotal\t158 GB\n');
  assert.equal(renderTable([{ gap: '  ' }, { width: 3, align: 'right', gap: '' }], [['rb', 0]]), '  rb  0\n');
});

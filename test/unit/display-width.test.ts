// collie pads table columns by display width, so names in any script line up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { displayWidth, padR, padL } from '../../collie/common.js';

test('ASCII takes one column per character', () => {
  assert.equal(displayWidth('disk.img'), 8);
});

test('CJK and fullwidth characters take two columns, combining marks none', () => {
  assert.equal(displayWidth('日本語'), 6);
  assert.equal(displayWidth('ＡＢ'), 4);
  assert.equal(displayWidth('e\u0301'), 1); // e + combining acute
});

test('padding fills to the same display width whatever the script', () => {
  assert.equal(displayWidth(padR('日本', 8)), 8);
  assert.equal(displayWidth(padR('abcd', 8)), 8);
  assert.equal(padL('語', 4), '  語');
  assert.equal(padR('toolongname', 4), 'toolongname');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSize, formatSize } from '../../lib/units.js';

test('sizes parse with binary suffixes in either case', () => {
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('1K'), 1024);
  assert.equal(parseSize('1025k'), 1025 * 1024);
  assert.equal(parseSize('64M'), 64 * 2 ** 20);
  assert.equal(parseSize('10G'), 10 * 2 ** 30);
  assert.equal(parseSize('4T'), 4 * 2 ** 40);
  assert.equal(parseSize('1P'), 2 ** 50);
  assert.equal(parseSize('1.5G'), 1.5 * 2 ** 30);
  assert.equal(parseSize('10GB'), 10 * 2 ** 30);
  assert.equal(parseSize('0'), 0);
});

test('malformed sizes are rejected', () => {
  for (const bad of ['', '1X', 'abc', '-1', '1..2M', 'M', '1.5']) assert.equal(parseSize(bad), null, bad);
});

test('sizes print like the original CLI', () => {
  assert.equal(formatSize(0), '0.0 MB');
  assert.equal(formatSize(1), '0.0 MB');
  assert.equal(formatSize(1049600), '1.0 MB');
  assert.equal(formatSize(64 * 2 ** 20), '64 MB');
  assert.equal(formatSize(2 ** 30), '1.0 GB');
  assert.equal(formatSize(4 * 2 ** 40), '4.0 TB');
  assert.equal(formatSize(85152563200), '79 GB');
  assert.equal(formatSize(255457689600), '238 GB');
  assert.equal(formatSize(213909504), '204 MB');
});

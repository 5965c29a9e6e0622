// The weights `collie cluster reweight` gives: the original's automatic vnodes, from store capacity.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { autoVnodes } from '../../sheep/cluster/reweight.js';

const GB = 2 ** 30;

test('vnodes are the default weight times capacity over the average capacity', () => {
  assert.deepEqual(autoVnodes([['a', 100 * GB], ['b', 200 * GB], ['c', 300 * GB]]), [['a', 32], ['b', 64], ['c', 96]]);
});

test('equal disks keep the default weight', () => {
  assert.deepEqual(autoVnodes([['a', 5 * GB], ['b', 5 * GB]]), [['a', 64], ['b', 64]]);
});

test('halves round to the even neighbour, as C rint() does', () => {
  // average 2: with base 5 the weights are 2.5 (to 2) and 7.5 (to 8)
  assert.deepEqual(autoVnodes([['a', 1], ['b', 3]], 5), [['a', 2], ['b', 8]]);
});

test('a node without capacity (a failed disk) gets none and does not count in the average', () => {
  assert.deepEqual(autoVnodes([['a', 0], ['b', 10 * GB], ['c', 30 * GB]]), [['a', 0], ['b', 32], ['c', 96]]);
});

test('a tiny disk still gets one vnode and a huge one at most 65535', () => {
  const w = autoVnodes([['tiny', 1], ['huge', 10_000_000 * GB]]);
  assert.equal(w[0][1], 1);
  assert.equal(w[1][1], 128);
  const many = autoVnodes([['big', 1e15]], 70000);
  assert.equal(many[0][1], 65535);
});

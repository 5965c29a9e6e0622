import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseReplica } from '../../lib/replica.js';

test('the copy with the newest last-write epoch wins over a majority of older copies', () => {
  const r = chooseReplica([{ digest: 'old', epoch: 3, n: 1 }, { digest: 'old', epoch: 3, n: 2 }, { digest: 'new', epoch: 5, n: 3 }]);
  assert.equal(r?.digest, 'new');
});

test('among copies of the same epoch the most common content wins', () => {
  const r = chooseReplica([{ digest: 'bad', epoch: 4 }, { digest: 'good', epoch: 4 }, { digest: 'good', epoch: 4 }]);
  assert.equal(r?.digest, 'good');
});

test('identical copies give that copy', () => {
  assert.equal(chooseReplica([{ digest: 'x', epoch: 1 }, { digest: 'x', epoch: 2 }])?.digest, 'x');
});

test('two copies of one epoch that differ do not decide', () => {
  assert.equal(chooseReplica([{ digest: 'a', epoch: 4 }, { digest: 'b', epoch: 4 }]), null);
});

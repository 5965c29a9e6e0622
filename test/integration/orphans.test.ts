// The orphan sweep: a block a client created but never mapped (it died between the create and the
// inode update) is reclaimed once older than --orphan-grace; mapped blocks stay.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startSheep, destroySheep, type SheepProcess } from '../helpers/sheep.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { oidHex, vidToDataOid } from '../../lib/oid.js';

const sheep: SheepProcess[] = [];
after(async () => { for (const s of sheep) await destroySheep(s); });

const exists = (f: string) => fs.access(f).then(() => true, () => false);

test('a created but never mapped block is reclaimed after the grace period, and mapped blocks stay', async () => {
  const s = await startSheep({ args: ['--orphan-grace', '1'] });
  sheep.push(s);
  const c = await s.client();
  try {
    const vid = await c.newVdi('orph', 16n << 20n);
    const v = await OpenVdi.open(c, vid);
    const kept = crypto.randomBytes(4096);
    await v.write(0, kept); // block 0: created and mapped
    // block 1: created the way a client does, then the client "dies" before mapping it
    await c.createAndWriteObj(vidToDataOid(vid, 1), 0, crypto.randomBytes(4096));
    const orphan = path.join(s.dir, 'obj', oidHex(vidToDataOid(vid, 1)));
    const mapped = path.join(s.dir, 'obj', oidHex(vidToDataOid(vid, 0)));
    assert.ok(await exists(orphan));
    const deadline = Date.now() + 15000;
    while (await exists(orphan)) {
      assert.ok(Date.now() < deadline, 'the unmapped block was not reclaimed');
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(await exists(mapped), 'the mapped block stays');
    assert.ok((await (await OpenVdi.open(c, vid)).read(0, 4096)).equals(kept));
  } finally {
    c.close();
  }
});

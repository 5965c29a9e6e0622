// The object store's open-file cache against files replaced under it: a write that opened an
// object's file just before the object was replaced (or set aside) must not land in the old file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { ObjectStore } from '../../sheep/store/store.js';
import { vidToDataOid } from '../../lib/oid.js';
import { Res, SdError } from '../../lib/proto.js';

const oid = vidToDataOid(0x123, 0);

async function freshStore(): Promise<ObjectStore> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'store-test-'));
  return ObjectStore.open(dir, pino({ level: 'silent' }));
}

/**
 * Runs `during` while a store call is held right after it opened the object's file: the moment
 * another request replaces the file under it.
 */
async function whileOpening<T>(store: ObjectStore, call: () => Promise<T>, during: () => Promise<unknown>): Promise<T> {
  const realOpen = fs.open;
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  let opened!: () => void;
  const isOpen = new Promise<void>((r) => { opened = r; });
  (fs as { open: typeof fs.open }).open = async (...args: Parameters<typeof fs.open>) => {
    const fh = await realOpen(...args);
    if (args[0] === store.pathOf(oid) && args[1] === fsc.O_RDWR) {
      opened();
      await gate;
    }
    return fh;
  };
  try {
    const pending = call();
    pending.catch(() => undefined);
    await isOpen;
    (fs as { open: typeof fs.open }).open = realOpen; // the replacing request opens files normally
    await during();
    release();
    return await pending;
  } finally {
    (fs as { open: typeof fs.open }).open = realOpen;
    release();
  }
}

test('a write that opened the file just before the object was replaced lands in the new file', async () => {
  const store = await freshStore();
  await store.create(oid, 0, Buffer.alloc(8192, 0xaa), 1);
  await whileOpening(store, () => store.write(oid, 0, Buffer.alloc(512, 0x55), 1),
    () => store.create(oid, 0, Buffer.alloc(8192, 0xbb), 1)); // an existing object is replaced atomically
  const onDisk = await fs.readFile(store.pathOf(oid));
  assert.ok(onDisk.subarray(0, 512).every((b) => b === 0x55), 'the write is in the file now in place');
  assert.ok(onDisk.subarray(512).every((b) => b === 0xbb));
  assert.ok((await store.read(oid, 0, 8192)).equals(onDisk), 'reads see the same file');
  await fs.rm(store.dir, { recursive: true });
});

test('a write racing a set-aside fails with NO_OBJ instead of landing in the set-aside copy', async () => {
  const store = await freshStore();
  await store.create(oid, 0, Buffer.alloc(8192, 0xaa), 1);
  await assert.rejects(whileOpening(store, () => store.write(oid, 0, Buffer.alloc(512, 0x55), 2), () => store.setAside(oid)),
    (e: unknown) => e instanceof SdError && e.result === Res.NO_OBJ);
  const aside = await fs.readFile(path.join(store.staleDir, path.basename(store.pathOf(oid))));
  assert.ok(aside.every((b) => b === 0xaa), 'the set-aside copy is untouched');
  await assert.rejects(store.read(oid, 0, 512), (e: unknown) => e instanceof SdError && e.result === Res.NO_OBJ);
  await fs.rm(store.dir, { recursive: true });
});

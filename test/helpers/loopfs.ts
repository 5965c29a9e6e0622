// A small real filesystem for one sheep's store: an ext4 image on a loop device (root only), so
// tests can fill a disk, or make it fail with EIO, without touching the machine's own disks.

import fs from 'node:fs/promises';
import path from 'node:path';
import { run } from './sheep.js';

export interface LoopFs {
  /** the mount point (empty ext4) */
  dir: string;
  /** makes every later I/O on it fail with EIO, as a dying disk does (ext4's shutdown ioctl) */
  fail(): Promise<void>;
  umount(): Promise<void>;
}

/** Why a loop filesystem cannot be made here (the tests that need one skip), or null. */
export async function loopFsUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'needs root (loop devices and mount)';
  for (const tool of ['mkfs.ext4', 'losetup', 'mount', 'python3']) {
    if ((await run('sh', ['-c', `command -v ${tool}`])).code !== 0) return `${tool} is not installed`;
  }
  return null;
}

export async function mountLoopFs(base: string, name: string, sizeMiB: number): Promise<LoopFs> {
  const image = path.join(base, `${name}.img`);
  const dir = path.join(base, name);
  await fs.mkdir(dir, { recursive: true });
  const fh = await fs.open(image, 'w');
  await fh.truncate(sizeMiB * 1024 * 1024);
  await fh.close();
  // no reserved blocks for root: the store sees the whole filesystem, as an unprivileged sheep would
  const mk = await run('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
  if (mk.code !== 0) throw new Error(`mkfs.ext4: ${mk.stderr}`);
  const m = await run('mount', ['-o', 'loop', image, dir]);
  if (m.code !== 0) throw new Error(`mount: ${m.stderr}`);
  return {
    dir,
    async fail() {
      // EXT4_IOC_SHUTDOWN (_IOR('X', 125, __u32)) with EXT4_GOING_FLAGS_NOLOGFLUSH
      const r = await run('python3', ['-c',
        'import fcntl,os,struct,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nfcntl.ioctl(fd,0x8004587D,struct.pack("I",2))', dir]);
      if (r.code !== 0) throw new Error(`ext4 shutdown: ${r.stderr}`);
    },
    async umount() {
      const u = await run('umount', [dir]);
      if (u.code !== 0) await run('umount', ['-l', dir]);
      await fs.rm(image, { force: true });
    },
  };
}

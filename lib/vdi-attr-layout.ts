// The attribute object (1<<61 | vid<<32 | attr_id) of GET_VDI_ATTR, laid out like Sheepdog's struct
// sheepdog_vdi_attr: the daemon writes it (sheep/vdi/vdi-attr.ts) and collie's cluster snapshot reads
// it back to save a VDI's attributes, so the offsets live here once.

import { readCString, SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN } from './proto.js';

export const ATTR_NAME = 0;
export const ATTR_TAG = 256;
export const ATTR_CTIME = 512;
export const ATTR_SNAPID = 520;
export const ATTR_VALUE_LEN = 524;
export const ATTR_KEY = 528;
/** where the value starts: everything before it is the fixed head */
export const ATTR_VALUE = 784;
export const SD_MAX_VDI_ATTR_KEY_LEN = 256;
export const SD_MAX_VDI_ATTR_VALUE_LEN = 65536;
export const SD_ATTR_OBJ_SIZE = ATTR_VALUE + SD_MAX_VDI_ATTR_VALUE_LEN; // 66,320

export interface AttrHead {
  name: string;
  tag: string;
  snapId: number;
  /** empty for a deleted attribute (a tombstone that probing must pass) */
  key: string;
  valueLength: number;
}

/** Decodes the fixed head (the first ATTR_VALUE bytes) of an attribute object. */
export function decodeAttrHead(b: Buffer): AttrHead {
  if (b.length < ATTR_VALUE) throw new RangeError(`attribute head needs ${ATTR_VALUE} bytes, got ${b.length}`);
  return {
    name: readCString(b, ATTR_NAME, SD_MAX_VDI_LEN),
    tag: readCString(b, ATTR_TAG, SD_MAX_VDI_TAG_LEN),
    snapId: b.readUInt32LE(ATTR_SNAPID),
    key: readCString(b, ATTR_KEY, SD_MAX_VDI_ATTR_KEY_LEN),
    valueLength: Math.min(b.readUInt32LE(ATTR_VALUE_LEN), SD_MAX_VDI_ATTR_VALUE_LEN),
  };
}

/**
 * Hexadecimal, in its two meanings: a number (an address, an offset, a value) as people read it
 * in messages, and bytes as they are shown and recorded (entry bytes, sites).
 */

/** "0x1f"; "-0x1f" below zero (a relocation's value can be negative). */
export function hexAddr(n: number | bigint): string {
  return n < 0 ? `-0x${(-n).toString(16)}` : `0x${n.toString(16)}`;
}

/** Two lower-case digits a byte, nothing between them: "f30f1efa". */
export function hexBytes(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

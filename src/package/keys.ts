/**
 * Signing keys and the trust store.
 *
 * A package's manifest.sig is base64 text of a detached ed25519 signature over the exact bytes
 * of manifest.json. The signature is prefixed with the signer's key id, so a verifier can tell
 * "signed by a key I do not trust" (PACKAGE_UNTRUSTED) from "signed by a trusted key, but the
 * manifest changed since" (PACKAGE_BAD_SIGNATURE):
 *
 *     base64( "Ed" | key id: 8 bytes | ed25519 signature: 64 bytes )      74 bytes, 100 characters
 *
 * A bare 64-byte signature (e.g. made with `openssl pkeyutl -sign -rawin`) is accepted too; it
 * names no signer, so it is tried against every trusted key.
 *
 * The trust store is a directory of `<keyId>.pub` files: the SPKI PEM, preceded by comment lines
 * holding the key's name and when it was added (PEM allows text before the BEGIN line).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { HpError } from '../errors.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { checkNotTampered } from '../fs/secure-path.js';

export interface KeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
  keyId: string;
}

export interface TrustedKey {
  keyId: string;
  /** Who the key belongs to, as given when it was trusted. */
  name?: string;
  /** ISO 8601 time it was added to the trust store. */
  added?: string;
  publicKeyPem: string;
}

const SIGNATURE_TAG = Buffer.from('Ed', 'latin1');
const KEY_ID_BYTES = 8;
const ED25519_SIGNATURE_BYTES = 64;
const TAGGED_SIGNATURE_BYTES = SIGNATURE_TAG.length + KEY_ID_BYTES + ED25519_SIGNATURE_BYTES;
const KEY_FILE_RE = /^([0-9a-f]{16})\.pub$/;
const PUBLIC_PEM_RE = /-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PUBLIC KEY-----/;

/** First 16 hex digits of the SHA-256 of the key's SPKI DER encoding. */
export function keyIdOf(key: KeyObject): string {
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** Parse an ed25519 public key from PEM text; refuse private keys, certificates and other algorithms. */
export function parsePublicKey(pem: string, what = 'the key'): { key: KeyObject; keyId: string; publicKeyPem: string } {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new HpError('KEY_NOT_PUBLIC', `${what} is a private key: refused, only public keys are trusted (give the .pub file, and keep the private key secret)`);
  }
  const block = PUBLIC_PEM_RE.exec(pem);
  if (!block) throw new HpError('KEY_INVALID', `${what} was refused: it holds no PEM "PUBLIC KEY" block`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: block[0], format: 'pem' });
  } catch (e) {
    throw new HpError('KEY_INVALID', `${what} was refused: it is not a readable public key (${(e as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new HpError('KEY_NOT_ED25519', `${what} was refused: it is an ${key.asymmetricKeyType ?? 'unknown'} key; packages are signed with ed25519 only`, {
      keyType: key.asymmetricKeyType,
    });
  }
  return { key, keyId: keyIdOf(key), publicKeyPem: key.export({ type: 'spki', format: 'pem' }).toString() };
}

function parsePrivateKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (e) {
    throw new HpError('KEY_INVALID', `the signing key was refused: it is not a readable PEM private key (${(e as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new HpError('KEY_NOT_ED25519', `the signing key was refused: it is an ${key.asymmetricKeyType ?? 'unknown'} key; packages are signed with ed25519 only`);
  }
  return key;
}

export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    keyId: keyIdOf(publicKey),
  };
}

/** The key id of the public half of a private key (PEM). */
export function keyIdOfPrivateKey(privateKeyPem: string): string {
  return keyIdOf(createPublicKey(parsePrivateKey(privateKeyPem)));
}

/** Sign the exact bytes of manifest.json; returns manifest.sig's text (base64, no newline). */
export function signManifest(bytes: Uint8Array, privateKeyPem: string): string {
  const key = parsePrivateKey(privateKeyPem);
  const signature = sign(null, bytes, key);
  const keyId = Buffer.from(keyIdOf(createPublicKey(key)), 'hex');
  return Buffer.concat([SIGNATURE_TAG, keyId, signature]).toString('base64');
}

/**
 * The trusted key that signed `bytes`, or HpError: PACKAGE_BAD_SIGNATURE (not a signature, or a
 * trusted key's signature that does not match these bytes: the manifest or its signature was
 * changed) or PACKAGE_UNTRUSTED (a signer the trust store does not know).
 */
export function verifyManifest(bytes: Uint8Array, sigBase64: string, trusted: readonly TrustedKey[]): TrustedKey {
  const text = sigBase64.replace(/\s+/g, '');
  const raw = /^[A-Za-z0-9+/]+={0,2}$/.test(text) ? Buffer.from(text, 'base64') : Buffer.alloc(0);
  const tagged = raw.length === TAGGED_SIGNATURE_BYTES && raw.subarray(0, SIGNATURE_TAG.length).equals(SIGNATURE_TAG);
  if (!tagged && raw.length !== ED25519_SIGNATURE_BYTES) {
    throw new HpError('PACKAGE_BAD_SIGNATURE', 'manifest.sig was refused: it is not base64 text of an ed25519 signature', { signatureBytes: raw.length });
  }
  const check = (k: TrustedKey, signature: Buffer): boolean => {
    try {
      return verify(null, bytes, createPublicKey(k.publicKeyPem), signature);
    } catch {
      return false;
    }
  };
  if (tagged) {
    const keyId = raw.subarray(SIGNATURE_TAG.length, SIGNATURE_TAG.length + KEY_ID_BYTES).toString('hex');
    const signature = raw.subarray(SIGNATURE_TAG.length + KEY_ID_BYTES);
    const key = trusted.find((k) => k.keyId === keyId);
    if (!key) {
      throw new HpError('PACKAGE_UNTRUSTED', `the package is signed by key ${keyId}, which is not in the trust store: the signer is unknown (if you trust it, add its public key with: hp-agent trust add KEY.pub)`, { keyId });
    }
    if (!check(key, signature)) {
      throw new HpError(
        'PACKAGE_BAD_SIGNATURE',
        `the signature of trusted key ${keyId}${key.name ? ` (${key.name})` : ''} does not match manifest.json: the manifest or its signature was changed after signing`,
        { keyId },
      );
    }
    return key;
  }
  const key = trusted.find((k) => check(k, raw));
  if (!key) {
    throw new HpError(
      'PACKAGE_UNTRUSTED',
      `the package's signature names no key and verifies under none of the ${trusted.length} trusted key(s): the signer is unknown (or the manifest was changed); if you trust the signer, add its public key with: hp-agent trust add KEY.pub`,
    );
  }
  return key;
}

// ------------------------------------------------------------------------------------------------
// Trust store

function checkName(name: string): string {
  const n = name.trim();
  if (!n || n.length > 128 || /[\x00-\x1f\x7f]/.test(n)) {
    throw new HpError('INVALID_ARGUMENT', `key name "${name}" was refused: expected 1 to 128 printable characters on one line`);
  }
  return n;
}

function parseTrustFile(file: string, text: string): TrustedKey {
  const fileKeyId = KEY_FILE_RE.exec(file)?.[1];
  let parsed: ReturnType<typeof parsePublicKey>;
  try {
    parsed = parsePublicKey(text, `trusted key file ${file}`);
  } catch (e) {
    throw new HpError('TRUST_STORE_CORRUPT', `the trust store is damaged: ${(e as Error).message}`, { file });
  }
  if (parsed.keyId !== fileKeyId) {
    throw new HpError('TRUST_STORE_CORRUPT', `the trust store is damaged: ${file} holds key ${parsed.keyId}, not ${fileKeyId}`, { file });
  }
  const header = (field: string) => new RegExp(`^# ${field}: (.*)$`, 'm').exec(text.slice(0, text.indexOf('-----BEGIN')))?.[1];
  const name = header('name');
  const added = header('added');
  return { keyId: parsed.keyId, ...(name ? { name } : {}), ...(added ? { added } : {}), publicKeyPem: parsed.publicKeyPem };
}

/**
 * Every trusted key, ordered by key id; an absent directory trusts nothing. The directory and
 * every key file must belong to the agent's user (or root) and be writable by nobody else, or
 * the trust store is refused (TRUST_STORE_INSECURE): anyone who could write there could make the
 * agent trust their key.
 */
export async function loadTrusted(dir: string): Promise<TrustedKey[]> {
  checkNotTampered(dir, 'the trust store', 'TRUST_STORE_INSECURE');
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new HpError('TRUST_STORE_UNREADABLE', `cannot read the trust store: ${(e as Error).message}`);
  }
  const out: TrustedKey[] = [];
  for (const file of names.filter((n) => KEY_FILE_RE.test(n)).sort()) {
    checkNotTampered(join(dir, file), 'trusted key file', 'TRUST_STORE_INSECURE');
    out.push(parseTrustFile(file, await readFile(join(dir, file), 'utf8')));
  }
  return out;
}

export const trustList = loadTrusted;

/**
 * Trust an ed25519 public key: write `<keyId>.pub` atomically. Trusting a key already trusted
 * keeps its date and changes only its name (when one is given).
 */
export async function trustAdd(dir: string, publicKeyPem: string, name?: string): Promise<TrustedKey> {
  const { keyId, publicKeyPem: pem } = parsePublicKey(publicKeyPem);
  const cleanName = name === undefined ? undefined : checkName(name);
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new HpError('TRUST_STORE_WRITE_FAILED', `cannot create the trust store ${dir}: ${(e as Error).message}`);
  }
  const existing = (await loadTrusted(dir)).find((k) => k.keyId === keyId);
  if (existing && (cleanName === undefined || cleanName === existing.name)) return existing;
  const finalName = cleanName ?? existing?.name;
  const key: TrustedKey = {
    keyId,
    ...(finalName ? { name: finalName } : {}),
    added: existing?.added ?? new Date().toISOString(),
    publicKeyPem: pem,
  };
  const text = `# hp-agent trusted package signing key ${keyId}\n` +
    (key.name ? `# name: ${key.name}\n` : '') +
    `# added: ${key.added}\n` +
    pem;
  try {
    await writeFileAtomic(join(dir, `${keyId}.pub`), text, 0o644);
  } catch (e) {
    throw new HpError('TRUST_STORE_WRITE_FAILED', `cannot add key ${keyId} to the trust store: ${(e as Error).message}`, { keyId });
  }
  return key;
}

/** A key id as the trust store names it: 16 lowercase hex digits. */
export const KEY_ID_RE = /^[0-9a-f]{16}$/;

/**
 * Stop trusting a key: remove `<keyId>.pub`. Returns the key removed; KEY_NOT_TRUSTED (nothing
 * changed) when the store has no such key.
 */
export async function trustRemove(dir: string, keyId: string): Promise<TrustedKey> {
  const key = (await loadTrusted(dir)).find((k) => k.keyId === keyId);
  if (!key) throw new HpError('KEY_NOT_TRUSTED', `key ${keyId} is not in the trust store (see hp-agent trust list). Nothing was changed`, { keyId });
  try {
    await unlink(join(dir, `${keyId}.pub`));
  } catch (e) {
    throw new HpError('TRUST_STORE_WRITE_FAILED', `cannot remove key ${keyId} from the trust store: ${(e as Error).message}`, { keyId });
  }
  return key;
}

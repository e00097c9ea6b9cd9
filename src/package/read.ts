/**
 * Opening a package, in the order that keeps an attacker's bytes away from everything else:
 * archive safety → manifest JSON and schema → signature (before any payload is looked at) →
 * payload sizes and hashes. Nothing is written anywhere.
 */
import { open } from 'node:fs/promises';
import { HpError } from '../errors.js';
import { checkPayload, DEFAULT_ARCHIVE_LIMITS, MANIFEST_FILE, readArchive, sha256Hex, SIGNATURE_FILE, type ArchiveLimits } from './archive.js';
import { loadTrusted, verifyManifest, type TrustedKey } from './keys.js';
import { parseManifest, type Manifest } from './manifest.js';

export interface OpenPackageOptions {
  /** The trust store directory (see trustDir(home)). */
  trustDir: string;
  /**
   * Developer switch: accept a package without a signature, or signed by a key the trust store
   * does not know. A signature that a trusted key made but that does not match is still refused.
   */
  allowUnsigned?: boolean;
  limits?: Partial<ArchiveLimits>;
}

export interface OpenedPackage {
  manifest: Manifest;
  /** The exact bytes the signature covers. */
  manifestBytes: Buffer;
  /** The trusted key that signed it; undefined only when allowUnsigned let an unsigned/untrusted package through. */
  signer?: TrustedKey;
  /** Payload files by their manifest path ("payload/…"), each checked against the manifest. */
  payload: Map<string, Buffer>;
  /** SHA-256 of the whole package file. */
  sha256: string;
  path: string;
}

async function readPackageFile(path: string, maxBytes: number): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new HpError(err.code === 'ENOENT' ? 'PACKAGE_NOT_FOUND' : 'PACKAGE_READ_FAILED', `cannot open package ${path}: ${err.message}`, { path, errno: err.code });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new HpError('PACKAGE_READ_FAILED', `package ${path} is not a regular file`, { path });
    if (st.size > maxBytes) {
      throw new HpError('PACKAGE_TOO_LARGE', `package ${path} was refused: it is ${st.size} bytes, over the ${maxBytes}-byte limit`, { path, size: st.size, limit: maxBytes });
    }
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

export async function openPackage(path: string, opts: OpenPackageOptions): Promise<OpenedPackage> {
  const limits = { ...DEFAULT_ARCHIVE_LIMITS, ...opts.limits };
  const data = await readPackageFile(path, limits.maxPackageBytes);
  const contents = await readArchive(data, limits, `package ${path}`);

  const manifestBytes = contents.files.get(MANIFEST_FILE);
  if (!manifestBytes) {
    throw new HpError('PACKAGE_UNSIGNED', `package ${path} was refused: it holds no ${MANIFEST_FILE}, so nothing in it is described or signed`, { path });
  }
  const manifest = parseManifest(manifestBytes, `${MANIFEST_FILE} of ${path}`);

  let signer: TrustedKey | undefined;
  const sig = contents.files.get(SIGNATURE_FILE);
  if (!sig) {
    if (!opts.allowUnsigned) {
      throw new HpError('PACKAGE_UNSIGNED', `package ${manifest.id} (${manifest.kb}) was refused: it has no ${SIGNATURE_FILE}, and unsigned packages are not accepted`, {
        path,
        id: manifest.id,
      });
    }
  } else {
    try {
      signer = verifyManifest(manifestBytes, sig.toString('utf8'), await loadTrusted(opts.trustDir));
    } catch (e) {
      if (!(e instanceof HpError)) throw e;
      if (!(opts.allowUnsigned && e.code === 'PACKAGE_UNTRUSTED')) {
        throw new HpError(e.code, `package ${manifest.id} (${manifest.kb}) was refused: ${e.message}`, { path, id: manifest.id, ...e.details });
      }
    }
  }

  const payload = checkPayload(manifest, contents);
  return { manifest, manifestBytes, ...(signer ? { signer } : {}), payload, sha256: sha256Hex(data), path };
}

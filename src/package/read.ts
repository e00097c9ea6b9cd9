/**
 * Opening a package, in the order that keeps an attacker's bytes away from everything else:
 * archive safety → manifest JSON and schema → signature (before any payload is looked at) →
 * payload sizes and hashes. Nothing is written anywhere.
 */
import { constants as fsConstants, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { HpError } from '../errors.js';
import { checkPayload, DEFAULT_ARCHIVE_LIMITS, MANIFEST_FILE, readArchive, sha256Hex, SIGNATURE_FILE, type ArchiveLimits } from './archive.js';
import { loadTrusted, verifyManifest, type TrustedKey } from './keys.js';
import { parseManifest, type Manifest } from './manifest.js';

export interface OpenPackageOptions {
  /** The trust store directory (the agent's: homeLayout(home).trustedKeys). */
  trustDir: string;
  /**
   * Developer switch: accept a package without a signature, or signed by a key the trust store
   * does not know. A signature that a trusted key made but that does not match is still refused.
   */
  allowUnsigned?: boolean;
  limits?: Partial<ArchiveLimits>;
  /** Stops the reading at the next chunk (see readArchive). */
  signal?: AbortSignal;
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

/**
 * The package file's bytes. Only a regular file is read: a FIFO would block the open (and the
 * agent holding its lock) until some writer came, a device could be endless or act on being
 * opened. So the path is looked at before it is opened, opened without blocking, and looked at
 * again through the descriptor (the path may have been swapped in between).
 */
async function readPackageFile(path: string, maxBytes: number): Promise<Buffer> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    throw openError(path, e);
  }
  if (!st.isFile()) throw notRegular(path, st);
  let fh;
  try {
    fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (e) {
    throw openError(path, e);
  }
  try {
    const now = await fh.stat();
    if (!now.isFile()) throw notRegular(path, now);
    if (now.size > maxBytes) {
      throw new HpError('PACKAGE_TOO_LARGE', `package ${path} was refused: it is ${now.size} bytes, over the ${maxBytes}-byte limit`, { path, size: now.size, limit: maxBytes });
    }
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

function openError(path: string, e: unknown): HpError {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT' || err.code === 'ENOTDIR') {
    return new HpError('PACKAGE_NOT_FOUND', `cannot open package ${path}: no such file (give the path of a .hpkg file)`, { path, errno: err.code });
  }
  return new HpError('PACKAGE_READ_FAILED', `cannot open package ${path}: ${err.message}`, { path, errno: err.code });
}

/** What a path that is not a regular file is, for a message (a FIFO would block whoever opened it). */
export function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'a special file';
}

/** Bad usage (exit 2): a package is read from a regular file only. */
function notRegular(path: string, st: Stats): HpError {
  return new HpError('PACKAGE_NOT_A_FILE', `package ${path} was refused: it is ${fileKind(st)}; give the path of a regular .hpkg file (to read a package from a pipe, save it to a file first)`, {
    path,
  });
}

export async function openPackage(path: string, opts: OpenPackageOptions): Promise<OpenedPackage> {
  const limits = { ...DEFAULT_ARCHIVE_LIMITS, ...opts.limits };
  const data = await readPackageFile(path, limits.maxPackageBytes);
  const contents = await readArchive(data, limits, `package ${path}`, { signal: opts.signal });

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

/** Packages: the signed, verifiable unit in which baselines and hotpatches travel. */

export * from './manifest.js';
export {
  buildArchive,
  checkPayload,
  DEFAULT_ARCHIVE_LIMITS,
  MANIFEST_FILE,
  PAYLOAD_DIR,
  packageEntries,
  readArchive,
  sha256Hex,
  SIGNATURE_FILE,
  writePackageFile,
  type ArchiveContents,
  type ArchiveLimits,
  type PackageContents,
} from './archive.js';
export {
  generateKeyPair,
  keyIdOf,
  keyIdOfPrivateKey,
  loadTrusted,
  parsePublicKey,
  signManifest,
  KEY_ID_RE,
  trustAdd,
  trustList,
  trustRemove,
  verifyManifest,
  type KeyPair,
  type TrustedKey,
} from './keys.js';
export { openPackage, type OpenedPackage, type OpenPackageOptions } from './read.js';
export { describeHotpatchFunction, packBaseline, packHotpatch, serviceEntry, type FunctionSource, type PackBaselineOptions, type PackHotpatchOptions, type PackResult, type PackService } from './pack.js';


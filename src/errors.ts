/**
 * Every refusal hp-agent makes is an HpError with a stable `code`, so the CLI can map it to an
 * exit code and `--json` consumers can branch on it. The message says what was refused and why;
 * `unchanged` says whether the target was left exactly as it was (true for every refusal made
 * before a byte was written, and for every failure the rollback path undid).
 */
export class HpError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly unchanged = true,
  ) {
    super(message);
    this.name = 'HpError';
  }
}

export interface ErrorCodeInfo {
  /** What the code means, in one line (the README's list of codes is made from these). */
  meaning: string;
  /**
   * Whether the target (the process being patched, or the machine being rebooted) can have been
   * changed when this code is returned: then the error's own `unchanged` says whether it was.
   * False: the code is only ever a refusal made before anything was written, or a failure whose
   * undo never fails.
   */
  canChange: boolean;
}

const refusal = (meaning: string): ErrorCodeInfo => ({ meaning, canChange: false });
const failure = (meaning: string): ErrorCodeInfo => ({ meaning, canChange: true });

/**
 * Every code hp-agent returns: thrown in src/, returned by the native core (native/, through
 * src/native.ts), or given per process in a result's `errorCode`. A code is one of these or it
 * does not compile; test/unit/error-codes.test.ts checks the native core's codes too. A reboot
 * or boot that fails part-way returns the code of what failed with `unchanged: false`.
 */
export const ERROR_CODES = {
  AGENT_BUSY: refusal('another agent holds the lock of the agent home and did not finish within --wait'),
  ALREADY_TRACED: refusal('the process is already traced (a debugger, strace, another agent): it can have only one tracer'),
  ATTACH_FAILED: refusal('the native core could not attach to a thread of the process'),
  BAD_DATE_TIME: refusal('a date-time (HP_AGENT_NOW, an option) is not ISO 8601 with a zone'),
  BAD_IMAGE: refusal('a patch image or record handed to the loader is not page-sized (an internal check)'),
  BAD_NAME: refusal('an id or service name cannot be used as a file name in the agent home'),
  BAD_REBOOT_TRANSITION: refusal('the reboot status may not move from its current value to the one asked'),
  BAD_REMOTE_CALL: refusal('a remote system call batch is malformed (too many calls, strings too long)'),
  BAD_SITE: refusal('a transaction site has expected and new bytes of different lengths'),
  BAD_TIME_ZONE: refusal('a time zone name is not an IANA time zone this system knows'),
  BASELINE_CONFLICT: refusal('the baseline is already installed from another package'),
  BASELINE_DOWNGRADE: refusal('the baseline was released before the one running or installed (--allow-downgrade)'),
  BASELINE_FILE_MISMATCH: refusal("an installed file's build-id is not the one the package was built for"),
  BASELINE_FILE_MISSING: refusal('the hotpatch patches a file its baseline does not have on disk'),
  BASELINE_MISMATCH: refusal('the hotpatch is for another baseline than the one the machine runs'),
  BASELINE_NOT_INSTALLED: refusal('the hotpatch needs a baseline and none runs on the machine'),
  BRANCH_INTO_JUMP: refusal("the function's own code branches or returns into the bytes the jump would overwrite"),
  BUILD_ID_MISSING: refusal('a file to pack has no GNU build-id, so the processes running it could not be told'),
  ELF_ADDRESS_UNMAPPED: refusal('an address of an ELF file lies in no PT_LOAD segment'),
  ELF_CORRUPT: refusal('an ELF file is truncated or its structures are inconsistent'),
  ELF_NOT_ELF: refusal('a file that should be ELF has no ELF magic'),
  ELF_READ_FAILED: refusal('an ELF file could not be read'),
  ELF_UNSUPPORTED: refusal('an ELF file is not little-endian ELF64 for x86-64'),
  ENTRY_BYTES_TOO_SHORT: refusal('fewer entry bytes were given than the jump needs to record what it replaces'),
  ENTRY_MISMATCH: failure("the bytes at a site are not the expected ones: something else changed them"),
  FEED_BAD_SIGNATURE: refusal("the update feed's index does not match its signature: it or the signature was changed"),
  FEED_DOWNLOAD_FAILED: refusal('a download from the update feed was cut off; nothing of it was kept'),
  FEED_INDEX_INVALID: refusal("the update feed's index is not JSON or not an index (a field, a duplicate package)"),
  FEED_PACKAGE_MISMATCH: refusal('a package from the update feed is not the one its index describes (size or SHA-256)'),
  FEED_STALE: refusal("the update feed's index is past its expiry"),
  FEED_UNREACHABLE: refusal('the update feed (a folder or a URL) or one of its files cannot be read'),
  FEED_UNSIGNED: refusal("the update feed's index has no signature"),
  FEED_UNTRUSTED: refusal("the update feed's index is signed by a key the trust store does not know"),
  FILE_CORRUPT: refusal('a file of the agent is not valid JSON'),
  FILE_INVALID: refusal('a file of the agent does not have the expected shape'),
  FOREIGN_CODE: refusal('the function was changed by something other than hp-agent'),
  FUNCTION_ACTIVE: refusal('function consistency: a thread kept running in, or returning into, the code being replaced'),
  FUNCTION_ALREADY_PATCHED: refusal('the function is already patched: revert it first'),
  FUNCTION_SIZE_MISMATCH: refusal('the function is not the size the manifest says'),
  FUNCTION_TOO_LONG: refusal('the function is longer than a manifest may describe'),
  FUNCTION_TOO_SHORT: refusal('the function is shorter than the jump it needs'),
  HELD_THREAD_RAN: refusal('a thread held asleep in its call ran during every attempt of the stop (the fence did not hold); nothing was written'),
  HISTORY_INVALID: refusal('a history entry to record is malformed (the history is unchanged)'),
  HOME_INSECURE: refusal("the agent home is another user's or writable by group or others"),
  HOME_NOT_DIRECTORY: refusal('the agent home, or a path to it, is not a directory'),
  HOME_NOT_WRITABLE: refusal('the agent home cannot be created or written'),
  HOTPATCH_SUPERSEDED: refusal('a later hotpatch level of the same baseline is already applied'),
  INSTALL_FAILED: failure('an update could not be installed (every process refused or failed it)'),
  INTERNAL: failure('an unexpected error (a bug): whatever it interrupted may be half done'),
  INTERRUPTED: refusal('stopped by a signal before changing anything'),
  INVALID_ADDRESS: refusal('an address is not a non-negative integer below 2^53'),
  INVALID_ARGUMENT: refusal('a library function was given an argument it cannot use'),
  INVALID_PID: refusal('a pid is not a positive integer'),
  JUMP_OUT_OF_RANGE: refusal('a rel32 jump cannot reach its target'),
  JUMP_TARGET_INVALID: refusal('the jump target lies inside the bytes the jump overwrites, or beyond its reach'),
  KEY_EXISTS: refusal('a key file already exists (--force replaces it)'),
  KEY_INVALID: refusal('the text holds no usable PEM public key'),
  KEY_NOT_ED25519: refusal('the key is not an ed25519 key'),
  KEY_NOT_PUBLIC: refusal('a private key was given where a public key is trusted'),
  KEY_NOT_TRUSTED: refusal('the key is not in the trust store'),
  KEY_WRITE_FAILED: refusal('the key pair could not be written'),
  LOCK_FAILED: refusal('the agent lock could not be used'),
  LOG_UNWRITABLE: refusal('the agent log cannot be opened'),
  MAPS_PARSE_ERROR: refusal('a line of /proc/PID/maps could not be parsed'),
  MAP_FAILED: refusal('the kernel placed the patch elsewhere than asked (the mapping was removed)'),
  MEMORY_READ_FAILED: failure("the process's memory could not be read (mid-switch: the writes done are undone)"),
  MEMORY_WRITE_FAILED: failure("the process's memory could not be written (the writes done are undone)"),
  NATIVE_CORE_MISSING: refusal('the native core is not built'),
  NOTHING_TO_REVERT: refusal('no hotpatch is applied'),
  NOT_CURRENT_LEVEL: refusal('the package named is not the applied hotpatch level'),
  NOT_ENROLLED: refusal('hotpatch enrollment is off: the hotpatch can only come with the next baseline'),
  NOT_HOT_PATCHABLE: refusal('the change cannot be made without stopping the process (no hot-patchable entry, or function consistency)'),
  NOT_PATCHED: refusal('the function to revert is not patched'),
  NO_FAR_ROOM: refusal('no free address range out of rel32 reach of the object'),
  NO_FUNCTIONS: refusal('no function to change was given'),
  NO_PROCESSES: refusal('no running process maps the object'),
  NO_ROOM_NEAR_OBJECT: refusal('no free address range within ±2 GiB of the object'),
  NO_SYSCALL_GADGET: refusal("the process has no executable `syscall; ret` or signal-return code to borrow"),
  OBJECT_AMBIGUOUS: refusal('several loaded objects match the name: give the full path'),
  OBJECT_NOT_LOADED: refusal('no loaded object of the process matches the name'),
  OPERATION_PENDING: refusal('an interrupted operation must be repaired first'),
  ORIGINAL_BYTES_MISMATCH: refusal("the function's bytes do not hash to the manifest's SHA-256: the package was built for other code"),
  PACKAGE_BAD_SIGNATURE: refusal("the package's signature does not verify"),
  PACKAGE_CORRUPT: refusal('the package is not a readable (gzip-compressed) tar archive'),
  PACKAGE_ID_CONFLICT: refusal('a package with the same id and other content is already stored'),
  PACKAGE_MANIFEST_INVALID: refusal("the package's manifest does not match the schema"),
  PACKAGE_NOT_A_FILE: refusal('the package path is not a regular file (exit 2)'),
  PACKAGE_NOT_FOUND: refusal('the package file does not exist (exit 2)'),
  PACKAGE_READ_FAILED: refusal('the package file could not be read'),
  PACKAGE_TAMPERED: refusal("a payload is missing or does not match the manifest's SHA-256"),
  PACKAGE_TOO_LARGE: refusal('the package exceeds a size limit'),
  PACKAGE_UNSAFE_ENTRY: refusal('an entry of the package would escape its folder or is not a plain file'),
  PACKAGE_UNSIGNED: refusal('the package is not signed (--allow-unsigned) or holds no manifest'),
  PACKAGE_UNTRUSTED: refusal('the package is signed by a key not in the trust store'),
  PACKAGE_WRITE_FAILED: refusal('the package file could not be written'),
  PACK_INPUT_UNREADABLE: refusal('an input of pack could not be read'),
  PATCH_BAD_BASE: refusal('the patch cannot be placed at the base asked'),
  PATCH_BAD_RESOLUTION: refusal('an address given for a symbol of the patch is not valid'),
  PATCH_CONSTRUCTOR: refusal('the patch has initializers, which hp-agent never runs'),
  PATCH_IFUNC_SYMBOL: refusal("the patch uses an IFUNC of the target that the patched object does not import"),
  PATCH_LAYOUT: refusal("the patch's segments cannot be mapped as linked"),
  PATCH_NOT_PIC: refusal('the patch is not an x86-64 position-independent shared object'),
  PATCH_RELOCATION_OVERFLOW: refusal("a relocation's value does not fit its field"),
  PATCH_TLS: refusal('the patch defines or uses thread-local storage'),
  PATCH_UNRESOLVED_SYMBOL: refusal('the patch refers to symbols neither it nor the target defines'),
  PATCH_UNSUPPORTED_RELOCATION: refusal('the patch has a relocation hp-agent does not apply'),
  PERMISSION_DENIED: failure("the process's memory cannot be opened or traced (mid-switch: the writes done are undone)"),
  PROCESS_EXITED: failure('the process exited while hp-agent worked on it'),
  PROCESS_NOT_FOUND: failure('no such process (or a zombie); mid-switch: it vanished'),
  PROCESS_NOT_RUNNING_BASELINE: refusal("the process asked for runs no file of the hotpatch's baseline"),
  PROCESS_RUNS_OTHER_BUILD: refusal('the process runs other builds of the files than the level needs (skipped)'),
  PROC_ACCESS_DENIED: refusal('/proc/PID cannot be read: no ptrace access to the process'),
  PROC_READ_FAILED: refusal('a /proc file of the process could not be read'),
  PTRACE_FAILED: failure("a ptrace request failed (registers, options, a thread's state)"),
  READ_FAILED: failure('a file (or, mid-switch, the process) could not be read'),
  REBOOT_REQUIRED: refusal("the hotpatch's baseline is installed but not running yet: reboot first"),
  RECORD_CORRUPT: refusal("a patch mapping in the process has no readable hp-agent record"),
  REMOTE_FILL_FAILED: refusal('the file made inside the process could not be filled (what ran was undone)'),
  REMOTE_SYSCALL_FAILED: refusal('a system call run inside the process failed (what ran was undone)'),
  REMOTE_UNSAFE: refusal('no thread of the process can be borrowed safely for a remote call (a shadow stack)'),
  RETURN_INTO_SITE: refusal('a thread kept a return address into the bytes being rewritten'),
  SERVICE_ALREADY_RUNNING: failure('the service already runs'),
  SERVICE_EXITED: failure('the service exited right after it started'),
  SERVICE_FILE_NOT_EXECUTABLE: failure("the service's file is not an absolute path to an executable"),
  SERVICE_NOT_READY: failure('the service was not ready in time and was stopped'),
  SERVICE_RESTART_FAILED: failure('an externally managed service could not be restarted'),
  SERVICE_START_FAILED: failure('the service could not be started'),
  STATE_CORRUPT: refusal("the agent's state file is not valid JSON"),
  STATE_INVALID: refusal('the state to save is invalid (the state file is unchanged)'),
  STATE_UNSUPPORTED: refusal("the state file's schema version is not this agent's"),
  SYMBOL_IS_IFUNC: refusal('the symbol is an indirect function (its resolver, not its code)'),
  SYMBOL_NOT_ADDRESSABLE: refusal('the symbol is thread-local: it has no one address'),
  SYMBOL_NOT_FOUND: refusal('the object defines no such symbol'),
  SYMBOL_NOT_FUNCTION: refusal('the symbol is not a function'),
  TARGET_IS_INIT: refusal("the process is a PID namespace's init (try --allow-init)"),
  TARGET_IS_OUR_CHILD: refusal("the process is this agent's child: run hp-agent as a separate process"),
  THREAD_IN_SITE: refusal('a thread kept executing inside the bytes being rewritten'),
  TOO_MANY_SITES: refusal("the patch record is larger than its limit"),
  TRUST_STORE_CORRUPT: refusal('a key file of the trust store is damaged'),
  TRUST_STORE_INSECURE: refusal("the trust store is another user's or writable by group or others"),
  TRUST_STORE_UNREADABLE: refusal('the trust store cannot be read'),
  TRUST_STORE_WRITE_FAILED: refusal('the trust store cannot be written'),
  USAGE: refusal('bad usage: an option or argument is wrong (exit 2)'),
  VERIFY_FAILED: failure('the bytes read back after a write are not those written'),
  WRITE_FAILED: failure("a file could not be written (its previous content is kept) or, mid-switch, the process's memory"),
} satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code);
}

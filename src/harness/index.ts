/**
 * Test harness for hp-agent: starts the fixture targets (fixtures/bin/*), talks their line protocol
 * (see fixtures/targets/proto.h) over stdin/stdout or a Unix socket, and makes sure every target it
 * started dies: kill() / killAllTargets() / useTargets(afterEach) during a run, and a synchronous
 * SIGKILL of the survivors when the Node process exits. A Node process killed without warning
 * takes its targets along too: each runs under fixtures/bin/launch, which dies with its parent and
 * kills its target as it goes (PR_SET_PDEATHSIG), and the fixtures exit at end of file on stdin.
 *
 * Targets are grandchildren, not children, of this process (fixtures/bin/launch in between), so
 * tests can ptrace them from this very process: libuv would otherwise waitpid() them on every
 * SIGCHLD and could swallow a pending ptrace-stop as if it were an exit.
 *
 * This module has no dependency on vitest (or any test runner) at runtime. Its parts: protocol.ts
 * (lines, requests and answers), target.ts, registry.ts (what to kill and remove), fixtures.ts and
 * unix-client.ts.
 */
export { buildFixtures, fixturePath } from './fixtures.js';
export { killAllTargets, killTargetsAfterEach, useTargets, type HookRegistrar } from './registry.js';
export { spawnTarget, type ExitInfo, type Target, type TargetOptions } from './target.js';
export { tempSocketPath, unixRequest, UnixClient } from './unix-client.js';

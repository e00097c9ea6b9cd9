/** Enrollment moves the agent's own operations make: a reboot onto the next baseline enrolls a Pending machine. */
import { nowIso } from '../clock.js';
import { installedBaselineManifest } from '../agent/baseline.js';
import type { AgentState } from '../agent/state.js';
import { settleEnrollment } from './settings.js';

/** The state with a Pending enrollment settled against the baseline it now runs (unchanged otherwise). */
export function settledEnrollmentState(home: string, state: AgentState): AgentState {
  const settled = settleEnrollment(state, (id) => installedBaselineManifest(home, id), nowIso());
  return settled ? { ...state, enrollment: settled.enrollment, enrollmentDetail: settled.detail } : state;
}

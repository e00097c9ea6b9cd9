/**
 * Update management as on Azure, for programs: settings and enrollment, the feed, assess and
 * install. Each `…In` function works inside a session the caller holds (the automatic loop);
 * the others are one agent run each, as the command line makes them.
 */
export * from './azure.js';
export { assess, assessIn, machineView, type Assessment, type UpdateRunOptions } from './assess.js';
export { install, installIn, planInstall, planInstallIn, estimateMs, measuredRebootMs, type InstallOptions, type InstallPlan } from './install.js';
export { applicablePatches, applicableBaseline, applicableHotpatch, releasedBy, type MachineView } from './applicable.js';
export { selectPatch, selectPatches, checkInstallParameters, normalizeKb, type Selection } from './select.js';
export { parseDuration, formatDuration } from './duration.js';
export { showConfig, setConfig, configReport, type ConfigReport } from './config.js';
export { applySettingChanges, defaultUpdateSettings, effectiveTimeZone, enrollmentAfterSettings, settleEnrollment, updateSettingsOf, type UpdateSettings, type OffPeak } from './settings.js';
export { buildFeed, type BuildFeedOptions, type BuildFeedResult } from './feed/build.js';
export { serveFeed, type FeedServer } from './feed/serve.js';
export { parseFeedSource, readFeedIndex, downloadPackage, describeSource, type FeedSource } from './feed/source.js';
export type { FeedEntry, FeedIndex } from './feed/index-format.js';
export { checkCalendar, packageRole, releaseCalendar, secondTuesday, type CalendarCheck, type CalendarMonth, type PackageRole, type ReleasedPackage } from './calendar.js';
export { installDeadline, isInWindow, nextWindow, nextWindowStart, windowAt, withinInstallDays, type WindowSpan } from './window.js';
export { schedule, type ScheduleOptions, type ScheduleReport } from './schedule.js';
export { runAgent, type RunAction, type RunOptions, type RunSummary } from './run.js';

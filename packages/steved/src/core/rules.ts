// Rules between settings, checked wherever settings come in: the command line and the
// configuration file (cli.ts, also on SIGHUP), a control request's set (core/pool.ts) and stevectl.

/**
 * min-jobs counts tokens of the pool (those that may be out whatever the load), so it can never
 * be more than jobs. Refused, never clamped: a silent clamp would hide a typo such as -m 5 -j 2.
 * The reason, or null when the two fit.
 */
export function minJobsProblem(minJobs: number, jobs: number): string | null {
  return minJobs > jobs ? `min-jobs (${minJobs}) is more than jobs (${jobs}): it counts tokens of the pool that may be out whatever the load` : null
}

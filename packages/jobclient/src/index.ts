// jobclient: a GNU make jobserver client for Node. See README.md.
export {
  JobClient,
  withToken,
  DEFAULT_JOBSERVER_PATHS,
  DEFAULT_FUSE_PATH,
  type Token,
  type ImplicitToken,
  type ExplicitToken,
  type JobClientOptions,
  type FromEnvOptions,
  type AcquireOptions,
  type AcquireManyOptions,
} from './client'
export {
  parseMakeflags,
  parseAuth,
  formatAuth,
  fromEnv,
  makeflagsForChild,
  MAKEFLAGS_VARIABLES,
  type JobserverAuth,
  type Makeflags,
  type EnvMakeflags,
} from './makeflags'
export {
  JobserverError,
  CodedError,
  systemError,
  problemOf,
  problemWords,
  describeProblem,
  accessGroup,
  withProblemWords,
  describeError,
  errorParts,
  errnoName,
  type JobserverErrorCode,
  type SystemError,
  type JobserverProblem,
} from './errors'
export { loadNative, UV_READABLE, FIONREAD, type Native, type NativePoller, type PollCallback } from './native'
// steved's control plane (stevectl, the emerge shim and steved itself use this one copy).
export * from './steved'
export { STATUS_SCHEMA, STATUS_VERSION, type Status } from './steved-status'
export { parseStat, type ProcInfo } from './procfs'

// jobclient: a GNU make jobserver client for Node. See README.md.
export {
  JobClient,
  withToken,
  DEFAULT_JOBSERVER_PATHS,
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
  systemError,
  problemOf,
  problemWords,
  describeProblem,
  accessGroup,
  withProblemWords,
  type JobserverErrorCode,
  type SystemError,
  type JobserverProblem,
} from './errors'
export { loadNative, UV_READABLE, FIONREAD, type Native, type NativePoller, type PollCallback } from './native'

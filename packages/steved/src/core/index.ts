export * from './types'
export { Pool, defaultConfig, pressureLimit, wantsPressure, TOKEN_BYTE } from './pool'
export { minJobsProblem } from './rules'

export * from './types'
export { Pool, defaultConfig, TOKEN_BYTE } from './pool'

// The version of steved and stevectl.
export const VERSION = '0.1.0'

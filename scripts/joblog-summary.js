// Summarise a job log ("start NAME NANOS" / "end NAME NANOS" lines): jobs, peak concurrency.
//   node scripts/joblog-summary.js LOG TOKENS TOPLEVEL_MAKES
'use strict'
const fs = require('node:fs')
const [log, tokens, makes] = process.argv.slice(2)
const starts = new Map()
const ev = []
for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
  const m = /^(start|end) (\S+) (\d+)$/.exec(line)
  if (!m) continue
  const t = Number(BigInt(m[3]) / 1000000n)
  if (m[1] === 'start') starts.set(m[2], t)
  ev.push([t, m[1] === 'start' ? 1 : -1])
}
ev.sort((a, b) => a[0] - b[0] || a[1] - b[1])
let cur = 0
let peak = 0
for (const [, d] of ev) peak = Math.max(peak, (cur += d))
const limit = Number(tokens) + Number(makes)
console.log(`${starts.size} make jobs ran; at most ${peak} at once`)
console.log(`limit: ${tokens} tokens + ${makes} implicit slots (one per top-level make) = ${limit}; cargo's jobs share the same tokens`)
if (peak > limit) {
  console.log('OVERSCHEDULED')
  process.exit(1)
}

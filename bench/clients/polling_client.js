#!/usr/bin/env node
// A polling jobserver client for the scheduling benchmark, built on packages/jobclient.
//
//   polling_client.js JOB LOG BUILD PARALLEL SPECFILE
//
// SPECFILE has one job per line: "NAME sleep|cpu MS"; each job is a real process
// (`JOB LOG BUILD:NAME KIND MS`, which records its start and end).
//
// With a jobserver in MAKEFLAGS it follows the same policy as blocking_client.py (cargo's), so
// that the two differ only in how they wait: one job in the implicit slot; one request for a
// token at a time while jobs are waiting, through JobClient.acquire() (poll, then a
// non-blocking read, on the event loop); a finishing job hands its token to the next waiting
// job; a token nobody needs goes straight back. Without a jobserver it runs PARALLEL jobs at a
// time.
'use strict'
const { execFile } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const [jobBin, log, build, parallelArg, spec] = process.argv.slice(2)
const parallel = Number(parallelArg)
const queue = fs
  .readFileSync(spec, 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => l.trim().split(/\s+/))
const total = queue.length

const runJob = ([name, kind, ms]) =>
  new Promise((resolve, reject) =>
    execFile(jobBin, [log, `${build}:${name}`, kind, ms], (err) => (err ? reject(err) : resolve())),
  )

async function withoutJobserver() {
  const worker = async () => {
    while (queue.length) await runJob(queue.shift())
  }
  await Promise.all(Array.from({ length: parallel }, worker))
}

function withJobserver() {
  const root = process.env.STEVED_ROOT ?? path.resolve(__dirname, '..', '..')
  const { JobClient } = require(path.join(root, 'packages', 'jobclient'))
  const client = JobClient.fromEnv({ implicitSlot: true })
  const abort = new AbortController()
  let finished = 0
  let asking = false
  return new Promise((resolve, reject) => {
    const fail = (e) => {
      abort.abort()
      client.closeQuietly()
      reject(e)
    }
    // Run jobs with this token until none waits, then give it back.
    const chain = async (token) => {
      try {
        while (queue.length) {
          await runJob(queue.shift())
          finished++
        }
      } catch (e) {
        return fail(e)
      }
      token.release()
      if (finished === total) {
        abort.abort()
        client.close()
        resolve()
      }
    }
    const ask = () => {
      if (asking || queue.length === 0) return
      asking = true
      client.acquire({ signal: abort.signal }).then(
        (token) => {
          asking = false
          if (queue.length === 0) token.release()
          else {
            chain(token)
            ask()
          }
        },
        (e) => {
          asking = false
          if (e.code !== 'ABORT_ERR' && e.name !== 'AbortError') fail(e)
        },
      )
    }
    ask()
  })
}

const done = /--jobserver-auth=fifo:\S+/.test(process.env.MAKEFLAGS ?? '') ? withJobserver() : withoutJobserver()
done.catch((e) => {
  console.error(`${build}: ${e.stack ?? e}`)
  process.exitCode = 1
})

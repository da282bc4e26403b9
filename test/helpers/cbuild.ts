// Small real C projects for the strict-client tests (test/ninja*.test.ts, bench/ninja): many
// translation units, compiled through a wrapper compiler that records when each compile (or
// link) ran, in the "start NAME NS / end NAME NS" log format of ./joblog.ts.

import * as fs from 'node:fs'
import * as path from 'node:path'

import { ROOT } from './steved'

export const VENV_BIN = path.join(ROOT, '.venv', 'bin')
/** Released ninja (PyPI wheel) and meson, from scripts/requirements.txt. */
export const NINJA = path.join(VENV_BIN, 'ninja')
export const MESON = path.join(VENV_BIN, 'meson')
export const CMAKE = path.join(VENV_BIN, 'cmake')
export const JOBCLIENT = path.join(ROOT, 'packages', 'jobclient', 'bin', 'jobclient.js')
export const JOBCLIENT_NINJA = path.join(ROOT, 'packages', 'jobclient', 'bin', 'jobclient-ninja.js')

/**
 * A compiler wrapper: logs start and end of every compile or link to $CCLOG (when set, so
 * meson's configure-time probes stay out of the log; never for --version, cc-rs's probe), holds each compile for `holdMs` so that jobs
 * overlap measurably on a busy 2-core machine, and runs the real cc.
 */
export function writeCcWrapper(dir: string, holdMs = 200): string {
  const file = path.join(dir, 'cc-log')
  fs.writeFileSync(
    file,
    `#!/bin/sh
case " $* " in *" --version "*) exec cc "$@" ;; esac
if [ -n "$CCLOG" ]; then
  name="$$-$(date +%s%N)"
  echo "start $name $(date +%s%N)" >> "$CCLOG"
  sleep ${holdMs / 1000}
  cc "$@"; rc=$?
  echo "end $name $(date +%s%N)" >> "$CCLOG"
  exit $rc
fi
exec cc "$@"
`,
    { mode: 0o755 },
  )
  return file
}

/** `n` C files, each a function with some arithmetic, and a main that calls them all. */
function writeSources(dir: string, prefix: string, n: number): string[] {
  fs.mkdirSync(dir, { recursive: true })
  const names: string[] = []
  for (let i = 0; i < n; i++) {
    const name = `${prefix}${i}.c`
    fs.writeFileSync(
      path.join(dir, name),
      `int ${prefix}${i}(int x) {\n  int s = 0;\n  for (int k = 0; k < x; k++) s += (k * ${i + 3}) ^ (s >> 2);\n  return s;\n}\n`,
    )
    names.push(name)
  }
  const decls = names.map((_, i) => `int ${prefix}${i}(int);`).join('\n')
  const calls = names.map((_, i) => `${prefix}${i}(argc)`).join(' + ')
  fs.writeFileSync(path.join(dir, 'main.c'), `${decls}\nint main(int argc, char **argv) { (void)argv; return (${calls}) & 1; }\n`)
  return [...names, 'main.c']
}

/** A meson project of `n` translation units in `dir`; returns the source directory. */
export function writeMesonProject(dir: string, n: number): string {
  const files = writeSources(dir, 'tu', n)
  fs.writeFileSync(
    path.join(dir, 'meson.build'),
    `project('many', 'c')\nexecutable('many', ${JSON.stringify(files).replace(/"/g, "'")})\n`,
  )
  return dir
}

/** A CMake project of `n` translation units in `dir`; returns the source directory. */
export function writeCmakeProject(dir: string, n: number): string {
  const files = writeSources(dir, 'cm', n)
  fs.writeFileSync(path.join(dir, 'CMakeLists.txt'), `cmake_minimum_required(VERSION 3.20)\nproject(many C)\nadd_executable(many ${files.join(' ')})\n`)
  return dir
}

/** A Makefile project of `n` translation units in `dir` (CC is the wrapper). */
export function writeMakeProject(dir: string, n: number, cc: string): string {
  const files = writeSources(dir, 'mk', n)
  const objs = files.map((f) => f.replace(/\.c$/, '.o'))
  fs.writeFileSync(
    path.join(dir, 'Makefile'),
    `CC = ${cc}\nall: prog\nprog: ${objs.join(' ')}\n\t$(CC) -o $@ $^\n%.o: %.c\n\t$(CC) -c $< -o $@\n`,
  )
  return dir
}

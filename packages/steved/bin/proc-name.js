'use strict'
// Give this process the name steve's users type: `pidof steved`, `pkill -USR1 steved`,
// `killall -USR1 steved`. process.title rewrites /proc/PID/cmdline (what pidof and ps read);
// libuv also sets the comm from it, cut to 15 bytes with the arguments in, so comm (what
// pkill and killall read) is written separately.
module.exports = function nameProcess(name, { keepArgv = false } = {}) {
  if (!keepArgv) process.title = [name, ...process.argv.slice(2)].join(' ')
  try {
    require('node:fs').writeFileSync('/proc/self/comm', name)
  } catch {
    // Not Linux, or no /proc: the name is a convenience.
  }
}

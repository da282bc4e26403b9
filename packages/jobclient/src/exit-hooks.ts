// Give tokens back when the process ends. Module state, installed only while a client is open:
// importing the library changes nothing about how the process handles signals.
//
//   - 'exit' (normal end, process.exit(), an uncaught exception): every open client writes
//     back what it holds; writes are synchronous syscalls, so this works inside 'exit'.
//   - SIGINT, SIGTERM, SIGHUP: if a client asked for it (handleSignals, the default) and no one
//     else listens to that signal, we own the default action: close every client (writing
//     tokens back), then re-raise the signal with its default disposition, so the process
//     still dies "by signal" and its parent sees that. If the application listens too, it
//     decides when to exit, and the 'exit' hook returns the tokens then.
//     signal-exit (v3 and v4; tap, ink and many CLIs load it) is not "the application": it
//     listens only to run exit handlers and re-raises only when its listeners are the only
//     ones. Were it counted, each would wait for the other and the process would ignore the
//     signal. So its listeners do not count; once ours is removed, it re-raises the signal.
// A SIGKILLed process cannot return anything: with a FIFO those tokens are lost (make has the
// same problem); steved takes them back by pid.

/** What the hooks need from a client. */
export interface ExitParticipant {
  /** Write back every held token; never throws. */
  releaseAllQuietly(): void
  /** Release and close; never throws. */
  closeQuietly(): void
  readonly handleSignals: boolean
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

// Open clients; the hooks are installed while this is non-empty.
const participants = new Set<ExitParticipant>()
// Whether the signal listeners are installed (some open client has handleSignals).
let signalsInstalled = false

function onExit(): void {
  for (const p of participants) p.releaseAllQuietly()
}

// Listeners of this signal that decide about exiting: all but ours and signal-exit's.
function deciders(signal: NodeJS.Signals): number {
  const count = (emitter: unknown): number => {
    const c = (emitter as { count?: unknown } | undefined)?.count
    return typeof c === 'number' ? c : 0
  }
  const v4 = (globalThis as Record<symbol, unknown>)[Symbol.for('signal-exit emitter')]
  const v3 = (process as unknown as { __signal_exit_emitter__?: unknown }).__signal_exit_emitter__
  return process.listenerCount(signal) - 1 - count(v4) - count(v3)
}

function onSignal(signal: NodeJS.Signals): void {
  // Someone else handles this signal too: it is theirs to act on (see above).
  if (deciders(signal) > 0) return
  for (const p of [...participants]) p.closeQuietly()
  uninstallSignals()
  process.kill(process.pid, signal)
}

function installSignals(): void {
  if (signalsInstalled) return
  signalsInstalled = true
  for (const s of SIGNALS) process.on(s, onSignal)
}

function uninstallSignals(): void {
  if (!signalsInstalled) return
  signalsInstalled = false
  for (const s of SIGNALS) process.removeListener(s, onSignal)
}

/** Start returning this client's tokens at exit (and on signals, if it asks for that). */
export function register(p: ExitParticipant): void {
  if (participants.size === 0) process.on('exit', onExit)
  participants.add(p)
  if (p.handleSignals) installSignals()
}

/** Stop; removes the process hooks when the last client goes. */
export function unregister(p: ExitParticipant): void {
  if (!participants.delete(p)) return
  if (![...participants].some((q) => q.handleSignals)) uninstallSignals()
  if (participants.size === 0) process.removeListener('exit', onExit)
}

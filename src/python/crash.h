// The crash site, for native code: with the `crash.capture` setting on, a fatal signal (SIGSEGV,
// SIGBUS, SIGILL, SIGFPE, SIGABRT) writes /var/tmp/probing-<pid>.crash, the report that
// `probing crash-report` prints, then lets the signal do what it would have done without the
// agent: the handler that was there before runs next (faulthandler's, a DataLoader worker's),
// or the default one ends the process by that signal, with the same status and core dump.
//
// The handler itself only makes system calls: it writes the report's head (signal, thread,
// command), then clones the process bare (no atfork handler) and lets the copy, which may use the
// heap, read the crashed thread's native stack and every thread's Python stack (the GIL-free
// reader) into the report; it waits for the copy at most kChildTimeoutS (a heap lock held at the
// crash can stall only the copy) and ends with a copy of /proc/self/maps, from which the CLI
// names the native frames. A second thread that crashes meanwhile waits for the first report.
#pragma once

namespace probing::python {

// Follows the `crash.capture` setting from now on: installs the handlers while it is on, puts
// the previous ones back (where nothing replaced ours since) when it goes off.
void start_crash_capture();

// Puts the handlers back in front where one that ends the process anyway has replaced them
// since: PyTorch's, which each DataLoader worker sets at its start (torch_trace.py calls this
// right after, in a forked worker; the agent's housekeeping thread every few seconds, which
// covers a worker that a forkserver or spawn started). Nothing when crash.capture is off.
void capture_crashes_again() noexcept;

}  // namespace probing::python

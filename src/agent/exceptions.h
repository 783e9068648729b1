// The crash site, for exceptions: with the `exceptions.capture` setting on, the agent keeps hooks
// in sys.excepthook, sys.unraisablehook and threading.excepthook that write each uncaught
// exception into python.exceptions, then call the hook they wrap.
#pragma once

namespace probing::agent {

// Follows the `exceptions.capture` setting from now on: installs the hooks once Python is
// initialized, wraps again a hook the program sets in place of one of them, and takes them out
// when the setting goes off. Its thread also keeps the crash handlers in front of the ones a
// DataLoader worker sets (python::capture_crashes_again).
void start_exception_capture();

}  // namespace probing::agent

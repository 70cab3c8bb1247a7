// The backend's log lines are written by otac::sys::log (common/sys/src/log.cpp), the writer
// every OTAC program shares; log.hpp names it in the backend's namespace.
#include "log.hpp"

// The backend's structured logs: the one log format of every OTAC program, otac/sys/log.hpp
// (one line per event, key=value pairs, to stderr). Never pass secrets.
#pragma once

#include "otac/sys/log.hpp"

namespace otac::backend::log {

using otac::sys::log::error;
using otac::sys::log::Fields;
using otac::sys::log::format;
using otac::sys::log::info;
using otac::sys::log::warn;
using otac::sys::log::write;
using otac::sys::log::write_lines;

}  // namespace otac::backend::log

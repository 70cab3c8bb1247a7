# Runs a program (otac-tool, or another one in TOOL) once and checks its exit status and
# output (a CTest helper, cmake -P).
# -DTOOL=path -DARGS="a|b|c" -DEXPECT_RC=n [-DEXPECT_OUT=regex] [-DEXPECT_ERR=regex] [-DFORBID=text]
# FORBID: a string (e.g. a key given on the command line) that must not appear in stdout
# or stderr.
string(REPLACE "|" ";" ARGS "${ARGS}")
get_filename_component(prog "${TOOL}" NAME)
execute_process(COMMAND ${TOOL} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 20)
if(NOT rc STREQUAL "${EXPECT_RC}")
  message(FATAL_ERROR "${prog} ${ARGS}: exit status ${rc}, expected ${EXPECT_RC}\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(DEFINED EXPECT_OUT AND NOT out MATCHES "${EXPECT_OUT}")
  message(FATAL_ERROR "${prog} ${ARGS}: stdout does not match '${EXPECT_OUT}'\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(DEFINED EXPECT_ERR AND NOT err MATCHES "${EXPECT_ERR}")
  message(FATAL_ERROR "${prog} ${ARGS}: stderr does not match '${EXPECT_ERR}'\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(DEFINED FORBID)
  string(TOLOWER "${out}${err}" all)
  string(TOLOWER "${FORBID}" forbid)
  string(FIND "${all}" "${forbid}" pos)
  if(NOT pos EQUAL -1)
    message(FATAL_ERROR "${prog} ${ARGS}: output repeats a secret given on the command line")
  endif()
endif()

# otac_program_test(TEST_NAME PROGRAM RC OUT_REGEX ERR_REGEX FORBID ARGS...): a CTest test that
# runs PROGRAM once with ARGS (run_tool.cmake) and checks its exit status, stdout against
# OUT_REGEX, stderr against ERR_REGEX, and that neither repeats FORBID (a secret given on the
# command line). OUT_REGEX, ERR_REGEX and FORBID may be "" for no check.
function(otac_program_test test_name program rc out err forbid)
  # The argument list travels '|'-separated: a ';' list would be split by add_test.
  string(REPLACE ";" "|" args "${ARGN}")
  set(defs -DTOOL=$<TARGET_FILE:${program}> "-DARGS=${args}" -DEXPECT_RC=${rc})
  foreach(check EXPECT_OUT:out EXPECT_ERR:err FORBID:forbid)
    string(REPLACE ":" ";" pair ${check})
    list(GET pair 0 define)
    list(GET pair 1 var)
    if(NOT "${${var}}" STREQUAL "")
      list(APPEND defs "-D${define}=${${var}}")
    endif()
  endforeach()
  add_test(NAME "${test_name}" COMMAND ${CMAKE_COMMAND} ${defs} -P ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/run_tool.cmake)
endfunction()

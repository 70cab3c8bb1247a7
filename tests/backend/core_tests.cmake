# Tests of backend/store and backend/service (included by tests/backend/CMakeLists.txt).
file(GLOB OTAC_BACKEND_CORE_TESTS CONFIGURE_DEPENDS
  ${CMAKE_CURRENT_LIST_DIR}/test_store*.cpp ${CMAKE_CURRENT_LIST_DIR}/test_service*.cpp)
# test_store_conformance.cpp runs against PostgreSQL too: a throw-away cluster (tests/support).
add_executable(test_backend_core ${OTAC_BACKEND_CORE_TESTS} ${PROJECT_SOURCE_DIR}/tests/support/pg_cluster.cpp)
target_include_directories(test_backend_core PRIVATE ${PROJECT_SOURCE_DIR}/tests/support)
# test_store_pg.cpp's TLS test listens on a loopback port from freeport.sh.
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/test_store_pg.cpp PROPERTIES
  COMPILE_DEFINITIONS OTAC_FREEPORT_SH="${PROJECT_SOURCE_DIR}/tests/support/freeport.sh")
find_package(PostgreSQL REQUIRED)
target_link_libraries(test_backend_core PRIVATE PostgreSQL::PostgreSQL)
# otac_applet: test_service_keys feeds the service's packets through the real applet core.
target_link_libraries(test_backend_core PRIVATE otac_test_main otac_backend_service otac_backend_store otac_applet otac_warnings)
# otac_bench_fill: test_service_bench_fill checks the rows of otac-loadgen's bulk fill.
target_link_libraries(test_backend_core PRIVATE otac_bench_fill)
# date::date: the policy tests name civil dates (date/date.h, header-only).
target_link_libraries(test_backend_core PRIVATE date::date)
catch_discover_tests(test_backend_core EXTRA_ARGS --warn NoTests TEST_PREFIX "backend-core: ")
# The store tests inspect the database file directly, as an attacker with a copy would.
find_package(SQLite3 REQUIRED)
target_link_libraries(test_backend_core PRIVATE SQLite::SQLite3)
target_include_directories(test_backend_core PRIVATE ${CMAKE_CURRENT_LIST_DIR})

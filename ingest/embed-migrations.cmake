# Generates ingest/migrations.h from ingest/migrations/NNNN-name.sql (sorted), so the schema ships inside the binary.
# Invoked at build time: cmake -DSRC_DIR=... -DOUT=... -P embed-migrations.cmake
file(GLOB files "${SRC_DIR}/*.sql")
list(SORT files)
set(body "")
foreach(f ${files})
  get_filename_component(name "${f}" NAME_WE)
  string(REGEX MATCH "^[0-9]+" num "${name}")
  math(EXPR version "${num}")
  file(READ "${f}" sql)
  string(APPEND body "  {${version}, \"${name}\", R\"evsql(${sql})evsql\"},\n")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from ingest/migrations/*.sql by ingest/embed-migrations.cmake. Do not edit.\n#pragma once\n\nnamespace evident::ingest {\nstruct migration { int version; const char* name; const char* sql; };\ninline constexpr migration migrations[] = {\n${body}};\n}  // namespace evident::ingest\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUT}.tmp" "${OUT}")

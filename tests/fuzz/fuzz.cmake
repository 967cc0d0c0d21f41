# The frame decoder's fuzzing: a plain replay of the seed corpus on every ctest run (any
# compiler), and, when clang is installed, the libFuzzer target (ASan + UBSan) replaying the
# corpus and running a short bounded fuzzing session, plus the long session `make fuzz-long`
# runs by hand. Included from core/worker/CMakeLists.txt.
set(KH_FUZZ_DIR ${CMAKE_SOURCE_DIR}/tests/fuzz)
set(KH_FUZZ_SOURCES ${KH_FUZZ_DIR}/fuzz_frame.c ${CMAKE_SOURCE_DIR}/core/src/frame.c
                     ${CMAKE_SOURCE_DIR}/core/src/protocol.c)

add_executable(kh_fuzz_replay ${KH_FUZZ_DIR}/replay.c ${KH_FUZZ_SOURCES})
target_include_directories(kh_fuzz_replay PRIVATE ${CMAKE_SOURCE_DIR}/core/src
                           ${CMAKE_SOURCE_DIR}/core/include)
target_compile_options(kh_fuzz_replay PRIVATE ${KH_WARNINGS})
target_compile_definitions(kh_fuzz_replay PRIVATE _GNU_SOURCE)
target_link_libraries(kh_fuzz_replay PRIVATE PkgConfig::JANSSON PkgConfig::YAJL PkgConfig::UV)
add_test(NAME fuzz/frame_corpus_replay COMMAND kh_fuzz_replay ${KH_FUZZ_DIR}/corpus)

find_program(KH_CLANG NAMES clang clang-16 clang-15 clang-14)
if(KH_CLANG)
  set(KH_FUZZ_BIN ${CMAKE_BINARY_DIR}/kh_fuzz_frame)
  set(KH_FUZZ_INC -I${CMAKE_SOURCE_DIR}/core/src -I${CMAKE_SOURCE_DIR}/core/include)
  foreach(d ${JANSSON_INCLUDE_DIRS} ${YAJL_INCLUDE_DIRS} ${UV_INCLUDE_DIRS})
    list(APPEND KH_FUZZ_INC -I${d})
  endforeach()
  add_custom_command(
    OUTPUT ${KH_FUZZ_BIN}
    COMMAND ${KH_CLANG} -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined
            -fno-sanitize-recover=all ${KH_FUZZ_INC} ${KH_FUZZ_SOURCES} ${JANSSON_LDFLAGS} ${YAJL_LDFLAGS}
            -o ${KH_FUZZ_BIN}
    DEPENDS ${KH_FUZZ_SOURCES} ${CMAKE_SOURCE_DIR}/core/src/internal.h
            ${CMAKE_SOURCE_DIR}/core/src/protocol.h
    COMMENT "Building the libFuzzer target kh_fuzz_frame with ${KH_CLANG}" VERBATIM)
  add_custom_target(kh_fuzz_frame ALL DEPENDS ${KH_FUZZ_BIN})
  add_test(NAME fuzz/frame_libfuzzer_replay COMMAND ${KH_FUZZ_BIN} -runs=0 ${KH_FUZZ_DIR}/corpus)
  # A bounded session: new inputs go to a scratch directory, never into the seed corpus.
  file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz-scratch)
  add_test(NAME fuzz/frame_libfuzzer_short
           COMMAND ${KH_FUZZ_BIN} -runs=200000 -max_len=8192 -max_total_time=10
                   -dict=${KH_FUZZ_DIR}/frame.dict ${CMAKE_BINARY_DIR}/fuzz-scratch
                   ${KH_FUZZ_DIR}/corpus)
  set_tests_properties(fuzz/frame_libfuzzer_short PROPERTIES TIMEOUT 120)
  # The long session, outside CI (`make fuzz-long`): 10 million executions in all, shared by
  # KH_FUZZ_JOBS processes (libFuzzer's fork mode, which also survives and counts crashes,
  # OOMs and timeouts: its last line gives the figure), with the protocol's tokens as a
  # dictionary. The corpus it grows is kept in the build tree, apart from the seed corpus.
  set(KH_FUZZ_RUNS 10000000 CACHE STRING "executions for the fuzz-long target")
  set(KH_FUZZ_JOBS 2 CACHE STRING "processes for the fuzz-long target")
  file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz-long/corpus)
  add_custom_target(fuzz-long
    COMMAND ${KH_FUZZ_BIN} -fork=${KH_FUZZ_JOBS} -runs=${KH_FUZZ_RUNS} -max_len=8192
            -dict=${KH_FUZZ_DIR}/frame.dict -print_final_stats=1
            -artifact_prefix=${CMAKE_BINARY_DIR}/fuzz-long/
            ${CMAKE_BINARY_DIR}/fuzz-long/corpus ${KH_FUZZ_DIR}/corpus
    DEPENDS kh_fuzz_frame USES_TERMINAL VERBATIM
    COMMENT "Fuzzing the frame decoder for ${KH_FUZZ_RUNS} executions")
endif()

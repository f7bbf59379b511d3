# CTest driver for examples/custom_trainer: the program's own objective ("dslic") trains from a
# TOML file and scores pairs; the stock `deviant` program does not know the name.
# -DTRAINER=... -DDEVIANT=... -DDATA=<tests/data> -DWORK=<scratch folder>
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
file(WRITE ${WORK}/run.toml "[model]\npath = \"${DATA}/models/llama\"\n[data]\ntrain = \"${DATA}/models/pairs.jsonl\"\n"
     "eval = \"${DATA}/models/pairs.jsonl\"\n[objective]\nname = \"dslic\"\ngamma = 30.0\n[training]\nlearning_rate = 1e-2\n"
     "max_steps = 4\nbatch_size = 2\n[output]\ndir = \"${WORK}/run\"\n")
execute_process(COMMAND ${TRAINER} train --config ${WORK}/run.toml --quiet RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "custom trainer failed (${rc}): ${err}")
endif()
if(NOT err MATCHES "with dslic on 5 pairs" OR NOT EXISTS ${WORK}/run/final/model.safetensors)
  message(FATAL_ERROR "custom trainer did not train dslic: ${err}")
endif()
# the margin loss falls on the training pairs
file(STRINGS ${WORK}/run/metrics.jsonl lines REGEX "\"loss\"")
list(GET lines 0 first)
list(GET lines -1 last)
string(REGEX MATCH "\"loss\":([-0-9.e+]+)" _ "${first}")
set(first_loss ${CMAKE_MATCH_1})
string(REGEX MATCH "\"loss\":([-0-9.e+]+)" _ "${last}")
set(last_loss ${CMAKE_MATCH_1})
if(NOT last_loss LESS first_loss)
  message(FATAL_ERROR "dslic loss did not fall: ${first_loss} -> ${last_loss}")
endif()
execute_process(COMMAND ${TRAINER} score --model ${DATA}/models/llama --pairs ${DATA}/models/pairs.jsonl --objective dslic
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "\"loss\"")
  message(FATAL_ERROR "custom trainer score failed (${rc}): ${err}")
endif()
execute_process(COMMAND ${DEVIANT} score --model ${DATA}/models/llama --pairs ${DATA}/models/pairs.jsonl --objective dslic
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "unknown objective 'dslic'")
  message(FATAL_ERROR "the stock program accepted dslic (${rc}): ${err}")
endif()
file(REMOVE_RECURSE ${WORK})
message(STATUS "dslic: loss ${first_loss} -> ${last_loss}")

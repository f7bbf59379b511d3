# CTest driver for examples/custom_trainer: the program's own objective ("dslic") and model family
# ("parallel-llama") train from TOML files, the trained family's checkpoint loads again to score;
# the stock `deviant` program knows neither name.
# -DTRAINER=... -DDEVIANT=... -DDATA=<tests/data> -DWORK=<scratch folder>
# first_and_last_loss(METRICS FIRST LAST): the loss of the first and of the last step in a metrics.jsonl
function(first_and_last_loss metrics first_var last_var)
  file(STRINGS ${metrics} lines REGEX "\"loss\"")
  list(GET lines 0 first)
  list(GET lines -1 last)
  string(REGEX MATCH "\"loss\":([-0-9.e+]+)" _ "${first}")
  set(${first_var} ${CMAKE_MATCH_1} PARENT_SCOPE)
  string(REGEX MATCH "\"loss\":([-0-9.e+]+)" _ "${last}")
  set(${last_var} ${CMAKE_MATCH_1} PARENT_SCOPE)
endfunction()

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
first_and_last_loss(${WORK}/run/metrics.jsonl first_loss last_loss)
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

# The program's own family: a fresh parallel-llama model (the fixture Llama's sizes) learns the
# pairs' chosen responses with SFT from a TOML file, then its checkpoint loads again to score.
file(READ ${DATA}/models/llama/config.json llama_config)
string(JSON family_config SET "${llama_config}" model_type "\"parallel-llama\"")
file(WRITE ${WORK}/parallel-llama.json "${family_config}")
file(WRITE ${WORK}/family.toml "[model]\ninit_config = \"${WORK}/parallel-llama.json\"\nseed = 3\n[data]\ntrain = \"${DATA}/models/pairs.jsonl\"\n"
     "[objective]\nname = \"sft\"\n[training]\nlearning_rate = 1e-2\nmax_steps = 6\nbatch_size = 5\n[output]\ndir = \"${WORK}/family\"\n")
execute_process(COMMAND ${TRAINER} train --config ${WORK}/family.toml --quiet RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT EXISTS ${WORK}/family/final/model.safetensors)
  message(FATAL_ERROR "custom trainer failed to train parallel-llama (${rc}): ${err}")
endif()
first_and_last_loss(${WORK}/family/metrics.jsonl family_first family_last)
if(NOT family_last LESS family_first)
  message(FATAL_ERROR "parallel-llama SFT loss did not fall: ${family_first} -> ${family_last}")
endif()
file(READ ${WORK}/family/final/config.json saved_config)
string(JSON saved_type GET "${saved_config}" model_type)
if(NOT saved_type STREQUAL "parallel-llama")
  message(FATAL_ERROR "the saved checkpoint's model_type is '${saved_type}'")
endif()
execute_process(COMMAND ${TRAINER} score --model ${WORK}/family/final --pairs ${DATA}/models/pairs.jsonl --objective sft
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "\"loss\"")
  message(FATAL_ERROR "custom trainer could not score with its trained parallel-llama (${rc}): ${err}")
endif()
execute_process(COMMAND ${DEVIANT} score --model ${WORK}/family/final --pairs ${DATA}/models/pairs.jsonl --objective sft
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "'parallel-llama', which is not supported")
  message(FATAL_ERROR "the stock program accepted parallel-llama (${rc}): ${err}")
endif()
file(REMOVE_RECURSE ${WORK})
message(STATUS "dslic: loss ${first_loss} -> ${last_loss}; parallel-llama SFT: loss ${family_first} -> ${family_last}")

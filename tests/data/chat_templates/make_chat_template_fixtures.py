#!/usr/bin/env python3
"""Reference renderings of real chat templates, for deviant's Jinja2 interpreter
(include/deviant/tokenizer/jinja.hpp, tests/test_jinja.cpp).

Writes, beside this script:
  <name>.jinja        every template in TEMPLATES, byte for byte as its model ships it
  chat_template.gguf  a GGUF file with no tensors holding SmolLM2's template, its token list and
                      BOS/EOS ids (for the GGUF loader test)
  expected.json       the templates' BOS/EOS strings; the conversations; for every template x
                      conversation x add_generation_prompt the text the reference renderer returns, or
                      the message of the exception the template raises; and "language" cases: small
                      templates written for this test, each with variables and the text it renders to
                      (or the error it raises)

Reference renderer: transformers' PreTrainedTokenizerFast.apply_chat_template(conversation,
tokenize=False, add_generation_prompt=..., tools=..., **extra) on a dummy tokenizer whose only
special tokens are the model's BOS and EOS strings, so bos_token/eos_token are defined exactly when
the model defines them (Qwen's BOS is undefined), and tools/documents are none unless given. The
language cases render in the environment transformers compiles chat templates in
(ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loopcontrols; its tojson filter,
raise_exception, strftime_now, namespace and dict). When transformers cannot be imported, both are
reproduced with jinja2 alone — that environment, plus render(messages=..., tools=None,
documents=None, add_generation_prompt=..., bos_token=..., eos_token=..., **extra) — and
expected.json's "renderer" field says which was used. No case depends on today's date: Llama 3.x
cases pass date_string.

Template sources (TEMPLATES[*]["origin"]): the "chat_template" of the Hugging Face repository
named there, or the tokenizer.chat_template key of that model's GGUF file where noted. The texts
were taken from public copies that quote those files verbatim (test suites of chat templates,
GGUF metadata); the Llama 3.1, Mistral v0.1 and Zephyr texts agree between two independent copies.
SmolLM2's is compared with the released GGUF file under ~/.cache/deviant/models when that file is
present.

Run from anywhere:  python3 make_chat_template_fixtures.py
(jinja2 >= 3.1; transformers + tokenizers for the reference renderer; gguf for chat_template.gguf)
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

TEMPLATES = {
    'smollm2-135m-instruct': dict(
        origin='HuggingFaceTB/SmolLM2-135M-Instruct: tokenizer.chat_template of its GGUF file (SmolLM2-135M-Instruct.Q4_1.gguf)',
        bos_token='<|im_start|>',
        eos_token='<|im_end|>',
        text=(
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\n"
            'You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'
            "' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n"
            "' + message['content'] + '<|im_end|>' + '\n"
            "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
            "' }}{% endif %}"
        ),
    ),
    'qwen2.5-7b-instruct': dict(
        origin='Qwen/Qwen2.5-7B-Instruct tokenizer_config.json (tools, default system prompt)',
        bos_token=None,
        eos_token='<|im_end|>',
        text=(
            '{%- if tools %}\n'
            "    {{- '<|im_start|>system\\n' }}\n"
            "    {%- if messages[0]['role'] == 'system' %}\n"
            "        {{- messages[0]['content'] }}\n"
            '    {%- else %}\n'
            "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
            '    {%- endif %}\n'
            '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}'
            '\n'
            '    {%- for tool in tools %}\n'
            '        {{- "\\n" }}\n'
            '        {{- tool | tojson }}\n'
            '    {%- endfor %}\n'
            '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}'
            '\n'
            '{%- else %}\n'
            "    {%- if messages[0]['role'] == 'system' %}\n"
            "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
            '    {%- else %}\n'
            "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
            '\n'
            '    {%- endif %}\n'
            '{%- endif %}\n'
            '{%- for message in messages %}\n'
            '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}'
            '\n'
            "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
            '    {%- elif message.role == "assistant" %}\n'
            "        {{- '<|im_start|>' + message.role }}\n"
            '        {%- if message.content %}\n'
            "            {{- '\\n' + message.content }}\n"
            '        {%- endif %}\n'
            '        {%- for tool_call in message.tool_calls %}\n'
            '            {%- if tool_call.function is defined %}\n'
            '                {%- set tool_call = tool_call.function %}\n'
            '            {%- endif %}\n'
            '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
            '            {{- tool_call.name }}\n'
            '            {{- \'", "arguments": \' }}\n'
            '            {{- tool_call.arguments | tojson }}\n'
            "            {{- '}\\n</tool_call>' }}\n"
            '        {%- endfor %}\n'
            "        {{- '<|im_end|>\\n' }}\n"
            '    {%- elif message.role == "tool" %}\n'
            '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
            "            {{- '<|im_start|>user' }}\n"
            '        {%- endif %}\n'
            "        {{- '\\n<tool_response>\\n' }}\n"
            '        {{- message.content }}\n'
            "        {{- '\\n</tool_response>' }}\n"
            '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
            "            {{- '<|im_end|>\\n' }}\n"
            '        {%- endif %}\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '{%- if add_generation_prompt %}\n'
            "    {{- '<|im_start|>assistant\\n' }}\n"
            '{%- endif %}\n'
        ),
    ),
    'llama-3.1-8b-instruct': dict(
        origin='meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json (date_string, tools, ipython)',
        bos_token='<|begin_of_text|>',
        eos_token='<|eot_id|>',
        text=(
            '{{- bos_token }}\n'
            '{%- if custom_tools is defined %}\n'
            '    {%- set tools = custom_tools %}\n'
            '{%- endif %}\n'
            '{%- if not tools_in_user_message is defined %}\n'
            '    {%- set tools_in_user_message = true %}\n'
            '{%- endif %}\n'
            '{%- if not date_string is defined %}\n'
            '    {%- set date_string = "26 Jul 2024" %}\n'
            '{%- endif %}\n'
            '{%- if not tools is defined %}\n'
            '    {%- set tools = none %}\n'
            '{%- endif %}\n'
            '\n'
            '{#- This block extracts the system message, so we can slot it into the right place. #}\n'
            "{%- if messages[0]['role'] == 'system' %}\n"
            "    {%- set system_message = messages[0]['content']|trim %}\n"
            '    {%- set messages = messages[1:] %}\n'
            '{%- else %}\n'
            '    {%- set system_message = "" %}\n'
            '{%- endif %}\n'
            '\n'
            '{#- System message + builtin tools #}\n'
            '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
            '{%- if builtin_tools is defined or tools is not none %}\n'
            '    {{- "Environment: ipython\\n" }}\n'
            '{%- endif %}\n'
            '{%- if builtin_tools is defined %}\n'
            '    {{- "Tools: " + builtin_tools | reject(\'equalto\', \'code_interpreter\') | join(", ") + "\\n\\n"}}\n'
            '{%- endif %}\n'
            '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
            '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
            '{%- if tools is not none and not tools_in_user_message %}\n'
            '    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}'
            '\n'
            '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}'
            '\n'
            '    {{- "Do not use variables.\\n\\n" }}\n'
            '    {%- for t in tools %}\n'
            '        {{- t | tojson(indent=4) }}\n'
            '        {{- "\\n\\n" }}\n'
            '    {%- endfor %}\n'
            '{%- endif %}\n'
            '{{- system_message }}\n'
            '{{- "<|eot_id|>" }}\n'
            '\n'
            '{#- Custom tools are passed in a user message with some extra guidance #}\n'
            '{%- if tools_in_user_message and not tools is none %}\n'
            '    {#- Extract the first user message so we can plug it in here #}\n'
            '    {%- if messages | length != 0 %}\n'
            "        {%- set first_user_message = messages[0]['content']|trim %}\n"
            '        {%- set messages = messages[1:] %}\n'
            '    {%- else %}\n'
            '        {{- raise_exception("Cannot put tools in the first user message when there\'s no first user message!") }}'
            '\n'
            '{%- endif %}\n'
            "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
            '    {{- "Given the following functions, please respond with a JSON for a function call " }}\n'
            '    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}\n'
            '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}'
            '\n'
            '    {{- "Do not use variables.\\n\\n" }}\n'
            '    {%- for t in tools %}\n'
            '        {{- t | tojson(indent=4) }}\n'
            '        {{- "\\n\\n" }}\n'
            '    {%- endfor %}\n'
            '    {{- first_user_message + "<|eot_id|>"}}\n'
            '{%- endif %}\n'
            '\n'
            '{%- for message in messages %}\n'
            "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
            "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}"
            '\n'
            "    {%- elif 'tool_calls' in message %}\n"
            '        {%- if not message.tool_calls|length == 1 %}\n'
            '            {{- raise_exception("This model only supports single tool-calls at once!") }}\n'
            '        {%- endif %}\n'
            '        {%- set tool_call = message.tool_calls[0].function %}\n'
            '        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n'
            "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
            '            {{- "<|python_tag|>" + tool_call.name + ".call(" }}\n'
            '            {%- for arg_name, arg_val in tool_call.arguments | items %}\n'
            '                {{- arg_name + \'="\' + arg_val + \'"\' }}\n'
            '                {%- if not loop.last %}\n'
            '                    {{- ", " }}\n'
            '                {%- endif %}\n'
            '                {%- endfor %}\n'
            '            {{- ")" }}\n'
            '        {%- else  %}\n'
            "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
            '            {{- \'{"name": "\' + tool_call.name + \'", \' }}\n'
            '            {{- \'"parameters": \' }}\n'
            '            {{- tool_call.arguments | tojson }}\n'
            '            {{- "}" }}\n'
            '        {%- endif %}\n'
            '        {%- if builtin_tools is defined %}\n'
            "            {#- This means we're in ipython mode #}\n"
            '            {{- "<|eom_id|>" }}\n'
            '        {%- else %}\n'
            '            {{- "<|eot_id|>" }}\n'
            '        {%- endif %}\n'
            '    {%- elif message.role == "tool" or message.role == "ipython" %}\n'
            '        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}\n'
            '        {%- if message.content is mapping or message.content is iterable %}\n'
            '            {{- message.content | tojson }}\n'
            '        {%- else %}\n'
            '            {{- message.content }}\n'
            '        {%- endif %}\n'
            '        {{- "<|eot_id|>" }}\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '{%- if add_generation_prompt %}\n'
            "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
            '{%- endif %}\n'
        ),
    ),
    'llama-3.2-3b-instruct': dict(
        origin='meta-llama/Llama-3.2-3B-Instruct, as stored in its GGUF file (strftime_now date)',
        bos_token='<|begin_of_text|>',
        eos_token='<|eot_id|>',
        text=(
            '{{- bos_token }}\n'
            '{%- if custom_tools is defined %}\n'
            '    {%- set tools = custom_tools %}\n'
            '{%- endif %}\n'
            '{%- if not tools_in_user_message is defined %}\n'
            '    {%- set tools_in_user_message = true %}\n'
            '{%- endif %}\n'
            '{%- if not date_string is defined %}\n'
            '    {%- if strftime_now is defined %}\n'
            '        {%- set date_string = strftime_now("%d %b %Y") %}\n'
            '    {%- else %}\n'
            '        {%- set date_string = "26 Jul 2024" %}\n'
            '    {%- endif %}\n'
            '{%- endif %}\n'
            '{%- if not tools is defined %}\n'
            '    {%- set tools = none %}\n'
            '{%- endif %}\n'
            '\n'
            '{#- This block extracts the system message, so we can slot it into the right place. #}\n'
            "{%- if messages[0]['role'] == 'system' %}\n"
            "    {%- set system_message = messages[0]['content']|trim %}\n"
            '    {%- set messages = messages[1:] %}\n'
            '{%- else %}\n'
            '    {%- set system_message = "" %}\n'
            '{%- endif %}\n'
            '\n'
            '{#- System message #}\n'
            '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
            '{%- if tools is not none %}\n'
            '    {{- "Environment: ipython\\n" }}\n'
            '{%- endif %}\n'
            '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
            '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
            '{%- if tools is not none and not tools_in_user_message %}\n'
            '    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}'
            '\n'
            '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}'
            '\n'
            '    {{- "Do not use variables.\\n\\n" }}\n'
            '    {%- for t in tools %}\n'
            '        {{- t | tojson(indent=4) }}\n'
            '        {{- "\\n\\n" }}\n'
            '    {%- endfor %}\n'
            '{%- endif %}\n'
            '{{- system_message }}\n'
            '{{- "<|eot_id|>" }}\n'
            '\n'
            '{#- Custom tools are passed in a user message with some extra guidance #}\n'
            '{%- if tools_in_user_message and not tools is none %}\n'
            '    {#- Extract the first user message so we can plug it in here #}\n'
            '    {%- if messages | length != 0 %}\n'
            "        {%- set first_user_message = messages[0]['content']|trim %}\n"
            '        {%- set messages = messages[1:] %}\n'
            '    {%- else %}\n'
            '        {{- raise_exception("Cannot put tools in the first user message when there\'s no first user message!") }}'
            '\n'
            '{%- endif %}\n'
            "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
            '    {{- "Given the following functions, please respond with a JSON for a function call " }}\n'
            '    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}\n'
            '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}'
            '\n'
            '    {{- "Do not use variables.\\n\\n" }}\n'
            '    {%- for t in tools %}\n'
            '        {{- t | tojson(indent=4) }}\n'
            '        {{- "\\n\\n" }}\n'
            '    {%- endfor %}\n'
            '    {{- first_user_message + "<|eot_id|>"}}\n'
            '{%- endif %}\n'
            '\n'
            '{%- for message in messages %}\n'
            "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
            "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}"
            '\n'
            "    {%- elif 'tool_calls' in message %}\n"
            '        {%- if not message.tool_calls|length == 1 %}\n'
            '            {{- raise_exception("This model only supports single tool-calls at once!") }}\n'
            '        {%- endif %}\n'
            '        {%- set tool_call = message.tool_calls[0].function %}\n'
            "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
            '        {{- \'{"name": "\' + tool_call.name + \'", \' }}\n'
            '        {{- \'"parameters": \' }}\n'
            '        {{- tool_call.arguments | tojson }}\n'
            '        {{- "}" }}\n'
            '        {{- "<|eot_id|>" }}\n'
            '    {%- elif message.role == "tool" or message.role == "ipython" %}\n'
            '        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}\n'
            '        {%- if message.content is mapping or message.content is iterable %}\n'
            '            {{- message.content | tojson }}\n'
            '        {%- else %}\n'
            '            {{- message.content }}\n'
            '        {%- endif %}\n'
            '        {{- "<|eot_id|>" }}\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '{%- if add_generation_prompt %}\n'
            "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
            '{%- endif %}\n'
        ),
    ),
    'mistral-7b-instruct-v0.1': dict(
        origin="mistralai/Mistral-7B-Instruct-v0.1 tokenizer_config.json (as republished in TheBloke's GPTQ copy)",
        bos_token='<s>',
        eos_token='</s>',
        text=(
            '{{ bos_token }}{% for message in messages %}'
            "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
            "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
            "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}"
            "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
        ),
    ),
    'mistral-7b-instruct-v0.3': dict(
        origin='mistralai/Mistral-7B-Instruct-v0.3 tokenizer_config.json (first release, with tools)',
        bos_token='<s>',
        eos_token='</s>',
        text=(
            '{{- bos_token }}\n'
            "{%- set user_messages = messages | selectattr('role', 'equalto', 'user') | list %}\n"
            '{%- for message in messages %}\n'
            "    {%- if message['role'] == 'user' %}\n"
            '        {%- if tools and (message == user_messages[-1]) %}\n'
            "            {{- ' [AVAILABLE_TOOLS] [' }}\n"
            '            {%- for tool in tools %}\n'
            '\t\t{%- set tool = tool.function %}\n'
            '\t\t{{- \'{"type": "function", "function": {\' }}\n'
            '\t\t{%- for key, val in tool|items if key != "return" %}\n'
            '\t\t    {%- if val is string %}\n'
            '\t\t\t{{- \'"\' + key + \'": "\' + val + \'"\' }}\n'
            '\t\t    {%- else %}\n'
            '\t\t\t{{- \'"\' + key + \'": \' + val|tojson }}\n'
            '\t\t    {%- endif %}\n'
            '\t\t    {%- if not loop.last %}\n'
            '\t\t\t{{- ", " }}\n'
            '\t\t    {%- endif %}\n'
            '\t\t{%- endfor %}\n'
            '\t\t{{- "}}" }}\n'
            '                {%- if not loop.last %}\n'
            '                    {{- ", " }}\n'
            '                {%- else %}\n'
            '                    {{- "]" }}\n'
            '                {%- endif %}\n'
            '            {%- endfor %}\n'
            "            {{- ' [/AVAILABLE_TOOLS]' }}\n"
            '            {%- endif %}\n'
            "        {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
            "    {%- elif message['role'] == 'assistant' %}\n"
            '        {%- if message.tool_calls is defined and message.tool_calls|length > 0 %}\n'
            "            {{- ' [TOOL_CALLS] [' }}\n"
            '            {%- for tool_call in message.tool_calls %}\n'
            '                {{- {"name": tool_call.function.name, "arguments": tool_call.function.arguments, "id": tool_call.id}|tojson }}'
            '\n'
            '                {%- if not loop.last %}\n'
            '                    {{- ", " }}\n'
            '                {%- endif %}\n'
            '            {%- endfor %}\n'
            "            {{- '] ' }}\n"
            '            {{- eos_token }}\n'
            '    \t{%- elif message.content is defined %}\n'
            "\t    {{- ' ' + message.content + ' ' + eos_token}}\n"
            '        {%- endif %}\n'
            "    {%- elif message['role'] == 'tool' %}\n"
            "        {{- ' [TOOL_RESULTS] ' }}\n"
            '        {{- \'{"call_id": "\' + message.tool_call_id + \'", "content": \' + message.content|string + \'}\' }}'
            '\n'
            "        {{- ' [/TOOL_RESULTS] ' }}\n"
            '    {%- endif %}\n'
            '{%- endfor %}\n'
        ),
    ),
    'llama-2-7b-chat': dict(
        origin='meta-llama/Llama-2-7b-chat-hf tokenizer_config.json, as stored in its GGUF file',
        bos_token='<s>',
        eos_token='</s>',
        text=(
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            '{% set system_message = false %}{% endif %}{% for message in loop_messages %}'
            "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
            '{% endif %}{% if loop.index0 == 0 and system_message != false %}'
            "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}"
            "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
            "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
            "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
        ),
    ),
    'zephyr-7b-beta': dict(
        origin='HuggingFaceH4/zephyr-7b-beta tokenizer_config.json',
        bos_token='<s>',
        eos_token='</s>',
        text=(
            '{% for message in messages %}\n'
            "{% if message['role'] == 'user' %}\n"
            "{{ '<|user|>\n"
            "' + message['content'] + eos_token }}\n"
            "{% elif message['role'] == 'system' %}\n"
            "{{ '<|system|>\n"
            "' + message['content'] + eos_token }}\n"
            "{% elif message['role'] == 'assistant' %}\n"
            "{{ '<|assistant|>\n"
            "'  + message['content'] + eos_token }}\n"
            '{% endif %}\n'
            '{% if loop.last and add_generation_prompt %}\n'
            "{{ '<|assistant|>' }}\n"
            '{% endif %}\n'
            '{% endfor %}'
        ),
    ),
    'phi-3-mini-4k-instruct': dict(
        origin='microsoft/Phi-3-mini-4k-instruct, as stored in its GGUF file',
        bos_token='<s>',
        eos_token='<|endoftext|>',
        text=(
            "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n"
            "' + message['content'] + '<|end|>\n"
            "'}}{% elif message['role'] == 'user' %}{{'<|user|>\n"
            "' + message['content'] + '<|end|>\n"
            "'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n"
            "' + message['content'] + '<|end|>\n"
            "'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n"
            "' }}{% else %}{{ eos_token }}{% endif %}"
        ),
    ),
    'mistral-nemo-instruct-2407': dict(
        origin='mistralai/Mistral-Nemo-Instruct-2407 tokenizer_config.json (namespace(), role checks)',
        bos_token='<s>',
        eos_token='</s>',
        text=(
            '{%- if messages[0]["role"] == "system" %}\n'
            '    {%- set system_message = messages[0]["content"] %}\n'
            '    {%- set loop_messages = messages[1:] %}\n'
            '{%- else %}\n'
            '    {%- set loop_messages = messages %}\n'
            '{%- endif %}\n'
            '{%- if not tools is defined %}\n'
            '    {%- set tools = none %}\n'
            '{%- endif %}\n'
            '{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}\n'
            '\n'
            '{%- for message in loop_messages | rejectattr("role", "equalto", "tool") | rejectattr("role", "equalto", "tool_results") | selectattr("tool_calls", "undefined") %}'
            '\n'
            '    {%- if (message["role"] == "user") != (loop.index0 % 2 == 0) %}\n'
            '        {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}'
            '\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '\n'
            '{{- bos_token }}\n'
            '{%- for message in loop_messages %}\n'
            '    {%- if message["role"] == "user" %}\n'
            '        {%- if tools is not none and (message == user_messages[-1]) %}\n'
            '            {{- "[AVAILABLE_TOOLS][" }}\n'
            '            {%- for tool in tools %}\n'
            '        {%- set tool = tool.function %}\n'
            '        {{- \'{"type": "function", "function": {\' }}\n'
            '        {%- for key, val in tool.items() if key != "return" %}\n'
            '            {%- if val is string %}\n'
            '            {{- \'"\' + key + \'": "\' + val + \'"\' }}\n'
            '            {%- else %}\n'
            '            {{- \'"\' + key + \'": \' + val|tojson }}\n'
            '            {%- endif %}\n'
            '            {%- if not loop.last %}\n'
            '            {{- ", " }}\n'
            '            {%- endif %}\n'
            '        {%- endfor %}\n'
            '        {{- "}}" }}\n'
            '                {%- if not loop.last %}\n'
            '                    {{- ", " }}\n'
            '                {%- else %}\n'
            '                    {{- "]" }}\n'
            '                {%- endif %}\n'
            '            {%- endfor %}\n'
            '            {{- "[/AVAILABLE_TOOLS]" }}\n'
            '            {%- endif %}\n'
            '        {%- if loop.last and system_message is defined %}\n'
            '            {{- "[INST]" + system_message + "\\n\\n" + message["content"] + "[/INST]" }}\n'
            '        {%- else %}\n'
            '            {{- "[INST]" + message["content"] + "[/INST]" }}\n'
            '        {%- endif %}\n'
            '    {%- elif message["role"] == "tool_calls" or message.tool_calls is defined %}\n'
            '        {%- if message.tool_calls is defined %}\n'
            '            {%- set tool_calls = message.tool_calls %}\n'
            '        {%- else %}\n'
            '            {%- set tool_calls = message.content %}\n'
            '        {%- endif %}\n'
            '        {{- "[TOOL_CALLS][" }}\n'
            '        {%- for tool_call in tool_calls %}\n'
            '            {%- set out = tool_call.function|tojson %}\n'
            '            {{- out[:-1] }}\n'
            '            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n'
            '                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}'
            '\n'
            '            {%- endif %}\n'
            '            {{- \', "id": "\' + tool_call.id + \'"}\' }}\n'
            '            {%- if not loop.last %}\n'
            '                {{- ", " }}\n'
            '            {%- else %}\n'
            '                {{- "]" + eos_token }}\n'
            '            {%- endif %}\n'
            '        {%- endfor %}\n'
            '    {%- elif message["role"] == "assistant" %}\n'
            '        {{- message["content"] + eos_token}}\n'
            '    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}\n'
            '        {%- if message.content is defined and message.content.content is defined %}\n'
            '            {%- set content = message.content.content %}\n'
            '        {%- else %}\n'
            '            {%- set content = message.content %}\n'
            '        {%- endif %}\n'
            '        {{- \'[TOOL_RESULTS]{"content": \' + content|string + ", " }}\n'
            '        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n'
            '            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n'
            '        {%- endif %}\n'
            '        {{- \'"call_id": "\' + message.tool_call_id + \'"}[/TOOL_RESULTS]\' }}\n'
            '    {%- else %}\n'
            '        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}'
            '\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
        ),
    ),
    'hermes-2-pro-llama-3-8b': dict(
        origin='NousResearch/Hermes-2-Pro-Llama-3-8B tool_use template (recursive macro)',
        bos_token='<|begin_of_text|>',
        eos_token='<|im_end|>',
        text=(
            '{%- macro json_to_python_type(json_spec) %}\n'
            '{%- set basic_type_map = {\n'
            '    "string": "str",\n'
            '    "number": "float",\n'
            '    "integer": "int",\n'
            '    "boolean": "bool"\n'
            '} %}\n'
            '\n'
            '{%- if basic_type_map[json_spec.type] is defined %}\n'
            '    {{- basic_type_map[json_spec.type] }}\n'
            '{%- elif json_spec.type == "array" %}\n'
            '    {{- "list[" +  json_to_python_type(json_spec|items) + "]"}}\n'
            '{%- elif json_spec.type == "object" %}\n'
            '    {%- if json_spec.additionalProperties is defined %}\n'
            '        {{- "dict[str, " + json_to_python_type(json_spec.additionalProperties) + \']\'}}\n'
            '    {%- else %}\n'
            '        {{- "dict" }}\n'
            '    {%- endif %}\n'
            '{%- elif json_spec.type is iterable %}\n'
            '    {{- "Union[" }}\n'
            '    {%- for t in json_spec.type %}\n'
            '      {{- json_to_python_type({"type": t}) }}\n'
            '      {%- if not loop.last %}\n'
            '        {{- "," }} \n'
            '    {%- endif %}\n'
            '    {%- endfor %}\n'
            '    {{- "]" }}\n'
            '{%- else %}\n'
            '    {{- "Any" }}\n'
            '{%- endif %}\n'
            '{%- endmacro %}\n'
            '\n'
            '\n'
            '{{- bos_token }}\n'
            '{{- "You are a function calling AI model. You are provided with function signatures within <tools></tools> XML tags. You may call one or more functions to assist with the user query. Don\'t make assumptions about what values to plug into functions. Here are the available tools: <tools> " }}'
            '\n'
            '{%- for tool in tools %}\n'
            '    {%- if tool.function is defined %}\n'
            '        {%- set tool = tool.function %}\n'
            '    {%- endif %}\n'
            '    {{- \'{"type": "function", "function": \' }}\n'
            '    {{- \'{"name": \' + tool.name + \'", \' }}\n'
            '    {{- \'"description": "\' + tool.name + \'(\' }}\n'
            '    {%- for param_name, param_fields in tool.parameters.properties|items %}\n'
            '        {{- param_name + ": " + json_to_python_type(param_fields) }}\n'
            '        {%- if not loop.last %}\n'
            '            {{- ", " }}\n'
            '        {%- endif %}\n'
            '    {%- endfor %}\n'
            '    {{- ")" }}\n'
            '    {%- if tool.return is defined %}\n'
            '        {{- " -> " + json_to_python_type(tool.return) }}\n'
            '    {%- endif %}\n'
            '    {{- " - " + tool.description + "\\n\\n" }}\n'
            '    {%- for param_name, param_fields in tool.parameters.properties|items %}\n'
            '        {%- if loop.first %}\n'
            '            {{- "    Args:\\n" }}\n'
            '        {%- endif %}\n'
            '        {{- "        " + param_name + "(" + json_to_python_type(param_fields) + "): " + param_fields.description|trim }}'
            '\n'
            '    {%- endfor %}\n'
            '    {%- if tool.return is defined and tool.return.description is defined %}\n'
            '        {{- "\\n    Returns:\\n        " + tool.return.description }}\n'
            '    {%- endif %}\n'
            '    {{- \'"\' }}\n'
            '    {{- \', "parameters": \' }}\n'
            '    {%- if tool.parameters.properties | length == 0 %}\n'
            '        {{- "{}" }}\n'
            '    {%- else %}\n'
            '        {{- tool.parameters | tojson}}\n'
            '    {%- endif %}\n'
            '    {{- "}" }}\n'
            '    {%- if not loop.last %}\n'
            '        {{- "\\n" }}\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '{{- " </tools>" }}\n'
            '{{- \'Use the following pydantic model json schema for each tool call you will make: {"properties": {"arguments": {"title": "Arguments", "type": "object"}, "name": {"title": "Name", "type": "string"}}'
            ', "required": ["arguments", "name"], "title": "FunctionCall", "type": "object"}\n'
            "' }}\n"
            '{{- "For each function call return a json object with function name and arguments within <tool_call></tool_call> XML tags as follows:\n'
            '" }}\n'
            '{{- "<tool_call>\n'
            '" }}\n'
            '{{- \'{"arguments": <args-dict>, "name": <function-name>}\n'
            "' }}\n"
            "{{- '</tool_call><|im_end|>' }}\n"
            '{%- for message in messages %}\n'
            '    {%- if message.role == "user" or message.role == "system" or (message.role == "assistant" and message.tool_calls is not defined) %}'
            '\n'
            "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
            '    {%- elif message.role == "assistant" %}\n'
            "        {{- '<|im_start|>' + message.role + '\\n<tool_call>\\n' }}\n"
            '        {%- for tool_call in message.tool_calls %}\n'
            '            {%- if tool_call.function is defined %}\n'
            '                {%- set tool_call = tool_call.function %}\n'
            '            {%- endif %}\n'
            "            {{- '{ ' }}\n"
            '            {%- if tool_call.arguments is defined %}\n'
            '                {{- \'"arguments": \' }}\n'
            '                {{- tool_call.arguments|tojson }}\n'
            "                {{- ', '}}\n"
            '            {%- endif %}\n'
            '            {{- \'"name": "\' }}\n'
            '            {{- tool_call.name }}\n'
            '            {{- \'"}\' }}\n'
            "            {{- '\\n</tool_call> ' }}\n"
            '        {%- endfor %}\n'
            "        {{- '<|im_end|>\\n' }}\n"
            '    {%- elif message.role == "tool" %}\n'
            '        {%- if not message.name is defined %}\n'
            '            {{- raise_exception("Tool response dicts require a \'name\' key indicating the name of the called function!") }}'
            '\n'
            '        {%- endif %}\n'
            "        {{- '<|im_start|>' + message.role + '\\n<tool_response>\\n' }}\n"
            '        {{- \'{"name": "\' }}\n'
            '        {{- message.name }}\n'
            '        {{- \'", "content": \' }}\n'
            "        {{- message.content|tojson + '}' }}\n"
            "        {{- '\\n</tool_response> <|im_end|>\\n' }} \n"
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '{%- if add_generation_prompt %}\n'
            "    {{- '<|im_start|>assistant\\n' }}\n"
            '{%- endif %}\n'
        ),
    ),
    'deepseek-r1': dict(
        origin='deepseek-ai/DeepSeek-R1 tokenizer_config.json',
        bos_token='<｜begin▁of▁sentence｜>',
        eos_token='<｜end▁of▁sentence｜>',
        text=(
            '{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}'
            "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}"
            "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
            "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}"
            "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}"
            '{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}'
            "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}"
            "{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' in message %}"
            "{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}"
            "{%- if message['content'] is none %}"
            "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
            '{%- else %}'
            "{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
            '{%- endif %}{%- set ns.is_first = true -%}{%- else %}'
            "{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
            "{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}"
            "{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}"
            "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"
            "{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}"
            "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
            "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
            "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
            "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
            '{%- set ns.is_output_first = false %}{%- else %}'
            "{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}"
            "{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
            "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"
        ),
    ),
    'qwen3-0.6b': dict(
        origin='Qwen/Qwen3-0.6B tokenizer_config.json (reasoning_content, reverse slicing)',
        bos_token=None,
        eos_token='<|im_end|>',
        text=(
            '{%- if tools %}\n'
            "    {{- '<|im_start|>system\\n' }}\n"
            "    {%- if messages[0].role == 'system' %}\n"
            "        {{- messages[0].content + '\\n\\n' }}\n"
            '    {%- endif %}\n'
            '    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}'
            '\n'
            '    {%- for tool in tools %}\n'
            '        {{- "\\n" }}\n'
            '        {{- tool | tojson }}\n'
            '    {%- endfor %}\n'
            '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}'
            '\n'
            '{%- else %}\n'
            "    {%- if messages[0].role == 'system' %}\n"
            "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
            '    {%- endif %}\n'
            '{%- endif %}\n'
            '{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n'
            '{%- for message in messages[::-1] %}\n'
            '    {%- set index = (messages|length - 1) - loop.index0 %}\n'
            '    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith(\'<tool_response>\') and message.content.endswith(\'</tool_response>\')) %}'
            '\n'
            '        {%- set ns.multi_step_tool = false %}\n'
            '        {%- set ns.last_query_index = index %}\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '{%- for message in messages %}\n'
            '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}\n'
            "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
            '    {%- elif message.role == "assistant" %}\n'
            '        {%- set content = message.content %}\n'
            "        {%- set reasoning_content = '' %}\n"
            '        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}\n'
            '            {%- set reasoning_content = message.reasoning_content %}\n'
            '        {%- else %}\n'
            "            {%- if '</think>' in message.content %}\n"
            "                {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}\n"
            "                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
            '\n'
            '            {%- endif %}\n'
            '        {%- endif %}\n'
            '        {%- if loop.index0 > ns.last_query_index %}\n'
            '            {%- if loop.last or (not loop.last and reasoning_content) %}\n'
            "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
            '\n'
            '            {%- else %}\n'
            "                {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
            '            {%- endif %}\n'
            '        {%- else %}\n'
            "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
            '        {%- endif %}\n'
            '        {%- if message.tool_calls %}\n'
            '            {%- for tool_call in message.tool_calls %}\n'
            '                {%- if (loop.first and content) or (not loop.first) %}\n'
            "                    {{- '\\n' }}\n"
            '                {%- endif %}\n'
            '                {%- if tool_call.function %}\n'
            '                    {%- set tool_call = tool_call.function %}\n'
            '                {%- endif %}\n'
            '                {{- \'<tool_call>\\n{"name": "\' }}\n'
            '                {{- tool_call.name }}\n'
            '                {{- \'", "arguments": \' }}\n'
            '                {%- if tool_call.arguments is string %}\n'
            '                    {{- tool_call.arguments }}\n'
            '                {%- else %}\n'
            '                    {{- tool_call.arguments | tojson }}\n'
            '                {%- endif %}\n'
            "                {{- '}\\n</tool_call>' }}\n"
            '            {%- endfor %}\n'
            '        {%- endif %}\n'
            "        {{- '<|im_end|>\\n' }}\n"
            '    {%- elif message.role == "tool" %}\n'
            '        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}\n'
            "            {{- '<|im_start|>user' }}\n"
            '        {%- endif %}\n'
            "        {{- '\\n<tool_response>\\n' }}\n"
            '        {{- message.content }}\n'
            "        {{- '\\n</tool_response>' }}\n"
            '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
            "            {{- '<|im_end|>\\n' }}\n"
            '        {%- endif %}\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '{%- if add_generation_prompt %}\n'
            "    {{- '<|im_start|>assistant\\n' }}\n"
            '    {%- if enable_thinking is defined and enable_thinking is false %}\n'
            "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
            '    {%- endif %}\n'
            '{%- endif %}'
        ),
    ),
}

# ---------------------------------------------------------------------------------------------
# Conversations.

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system_user": [SYSTEM, {"role": "user", "content": "What is 2 + 2?"}],
    "multi_turn": [
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "system_multi_turn": [
        SYSTEM,
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one."},
    ],
    "ends_with_assistant": [
        {"role": "user", "content": "Say yes."},
        {"role": "assistant", "content": "Yes."},
    ],
    "unicode_whitespace": [
        {"role": "system", "content": "  Réponds en français.\n"},
        {"role": "user", "content": "  Héllo, 世界! 🚀\n\nSecond line\twith a tab.  "},
        {"role": "assistant", "content": "\n  Ça va? «quotes» \"double\" 'single' \\ back\\slash  \n"},
        {"role": "user", "content": "Emoji 👍🏽, a zero\u200bwidth space, <b>tags</b> & {{ braces }} {% not a tag %}"},
    ],
    "empty_content": [{"role": "user", "content": ""}],
    "non_alternating": [
        {"role": "user", "content": "First."},
        {"role": "user", "content": "Second."},
    ],
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_temperature",
            "description": "Get the current temperature at a location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The location, as \"City, Country\"."},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit."},
                },
                "required": ["location", "unit"],
            },
        },
    }
]
CONVERSATIONS["tool_use"] = [
    {"role": "system", "content": "You answer weather questions."},
    {"role": "user", "content": "How warm is it in Paris right now?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call12345",
                "type": "function",
                "function": {"name": "get_current_temperature", "arguments": {"location": "Paris, France", "unit": "celsius"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call12345", "name": "get_current_temperature", "content": "22.0"},
]

BASIC = ["user", "system_user", "multi_turn", "system_multi_turn", "ends_with_assistant", "unicode_whitespace",
         "empty_content", "non_alternating"]
LLAMA31_DATE = {"date_string": "26 Jul 2024"}
LLAMA32_DATE = {"date_string": "15 Mar 2025"}

# (template, conversations, extra variables)
PLAN = [
    ("smollm2-135m-instruct", BASIC, {}),
    ("qwen2.5-7b-instruct", BASIC, {}),
    ("qwen2.5-7b-instruct", ["system_user", "tool_use"], {"tools": TOOLS}),
    ("llama-3.1-8b-instruct", BASIC, LLAMA31_DATE),
    ("llama-3.1-8b-instruct", ["system_user", "tool_use"], {**LLAMA31_DATE, "tools": TOOLS}),
    ("llama-3.1-8b-instruct", ["tool_use"], {**LLAMA31_DATE, "tools": TOOLS, "tools_in_user_message": False}),
    ("llama-3.1-8b-instruct", ["user"], {**LLAMA31_DATE, "builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]}),
    ("llama-3.2-3b-instruct", BASIC, LLAMA32_DATE),
    ("llama-3.2-3b-instruct", ["tool_use"], {**LLAMA32_DATE, "tools": TOOLS}),
    ("mistral-7b-instruct-v0.1", BASIC, {}),
    ("mistral-7b-instruct-v0.3", BASIC, {}),
    ("mistral-7b-instruct-v0.3", ["tool_use"], {"tools": TOOLS}),
    ("llama-2-7b-chat", BASIC, {}),
    ("zephyr-7b-beta", BASIC, {}),
    ("phi-3-mini-4k-instruct", BASIC, {}),
    ("mistral-nemo-instruct-2407", BASIC, {}),
    ("mistral-nemo-instruct-2407", ["tool_use"], {"tools": TOOLS}),
    ("hermes-2-pro-llama-3-8b", ["user", "tool_use"], {}),
    ("hermes-2-pro-llama-3-8b", ["user", "tool_use"], {"tools": TOOLS}),
    ("deepseek-r1", BASIC, {}),
    ("qwen3-0.6b", BASIC, {}),
    ("qwen3-0.6b", ["multi_turn"], {"enable_thinking": False}),
    ("qwen3-0.6b", ["tool_use"], {"tools": TOOLS}),
]

# ---------------------------------------------------------------------------------------------
# Language cases: (name, template, variables). Written for this test; the expected text (or error)
# is whatever the reference environment produces.

MSGS = [{"role": "system", "content": "sys"}, {"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}]
LANGUAGE = [
    # whitespace control, trim_blocks, lstrip_blocks
    ("text only", "plain text, no tags\n", {}),
    ("trailing newline dropped once", "a\n\n", {}),
    ("crlf normalised", "a\r\nb\rc\r\n", {}),
    ("trim_blocks eats one newline", "{% if true %}\nA\n{% endif %}\nB", {}),
    ("lstrip_blocks strips indentation", "x\n    {% if true %}\n    y\n    {% endif %}\nz", {}),
    ("lstrip only at line start", "x  {% if true %}y{% endif %}  z", {}),
    ("lstrip at template start", "   {% if true %}y{% endif %}", {}),
    ("lstrip not for expressions", "x\n    {{ 'y' }}\n", {}),
    ("minus strips both sides", "a  \n  {%- if true -%}  \n  b  \n  {%- endif -%}\n  c", {}),
    ("minus on expressions", "a \n {{- 'b' -}} \n c", {}),
    ("plus keeps indentation", "x\n    {%+ if true %}y{% endif %}", {}),
    ("plus keeps the newline", "{% if true +%}\nA{% endif %}", {}),
    ("comments", "a {# note #}\nb\n  {# indented #}\nc{#- x -#}  d", {}),
    ("comment with newline after", "{# c #}\nx", {}),
    ("raw block", "{% raw %}{{ not evaluated }}{% endraw %}|{%- raw -%}  {% if %}  {%- endraw %}|", {}),
    ("tab indentation", "a\n\t{% if true %}\n\tb\n\t{% endif %}\n", {}),
    ("whitespace in data kept", "  a  {{ 'b' }}  c  ", {}),
    ("block then text on same line", "{% if true %}a{% endif %}\n{% if false %}b{% endif %}\nc", {}),
    ("set keeps following newline trimmed", "{% set x = 1 %}\n{{ x }}\n", {}),
    ("nested blocks indentation", "{% for m in messages %}\n  {% if m.role == 'user' %}\n    U:{{ m.content }}\n  {% else %}\n    O:{{ m.content }}\n  {% endif %}\n{% endfor %}\n", {"messages": MSGS}),
    # literals and printing
    ("literals", "{{ 1 }}|{{ -2 }}|{{ 1.5 }}|{{ 1e3 }}|{{ 1_000 }}|{{ 0x1F }}|{{ true }}|{{ False }}|{{ none }}|{{ None }}", {}),
    ("string escapes", "{{ 'a\\nb\\tc\\\\d\\'e' }}|{{ \"q\\\"q\" }}|{{ '\\u00e9\\x41\\101' }}|{{ 'keep \\d' }}", {}),
    ("adjacent strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("python repr of containers", "{{ [1, 'a', none, true, 2.5, {'k': 'v'}] }}|{{ {'a': \"it's\", 'b': [1]} }}|{{ ['x\\ny'] }}", {}),
    ("repr quoting", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"'] }}", {}),
    ("float printing", "{{ 0.1 + 0.2 }}|{{ 1/3 }}|{{ 2.0 }}|{{ 1e16 }}|{{ 1e15 }}|{{ 1e-4 }}|{{ 1e-5 }}|{{ 123456789.125 }}|{{ -0.0 }}|{{ 1e300 * 1e300 }}", {}),
    ("numbers from variables", "{{ a }}|{{ b }}|{{ c }}|{{ a + b }}|{{ c * 2 }}", {"a": 3, "b": 2.5, "c": -7}),
    ("braces inside expressions", "{{ '{{ x }}' }}|{{ {'a': {'b': 1}} }}|{{ {'a': {'b': 1}}['a']['b'] }}", {}),
    # arithmetic and operators
    ("arithmetic", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 8 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", {}),
    ("float arithmetic", "{{ 7.5 // 2 }} {{ -7 % 2.5 }} {{ 2 ** 0.5 }} {{ 1.5 * 2 }}", {}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 2 * 3 ~ 'x' }} {{ 10 - 2 - 3 }} {{ 2 ** 3 ** 2 }}", {}),
    ("concat", "{{ 'a' ~ 1 ~ none ~ true ~ 1.5 ~ [1] ~ undefined_thing }}", {}),
    ("string plus", "{{ 'a' + 'b' }}{{ [1] + [2, 3] }}{{ 'ab' * 3 }}{{ [0] * 3 }}{{ 3 * 'x' }}", {}),
    ("bool arithmetic", "{{ true + 1 }} {{ true * 3 }} {{ 1 == 1.0 }} {{ true == 1 }}", {}),
    ("comparisons", "{{ 1 < 2 }} {{ 2 <= 2 }} {{ 3 > 4 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 != 1 }}", {}),
    ("equality of containers", "{{ {'a': 1, 'b': 2} == {'b': 2, 'a': 1} }} {{ [1, [2]] == [1, [2]] }} {{ none == none }} {{ 'a' == 1 }}", {}),
    ("in and not in", "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'x' not in ['x'] }} {{ 'z' not in 'abc' }} {{ 'role' in m }} {{ 'a' in missing }}", {"m": {"role": "user"}}),
    ("logic returns operands", "{{ 0 or 'x' }}|{{ 'a' and 'b' }}|{{ none or [] }}|{{ 1 and 0 }}|{{ not 0 }}|{{ not 'a' }}", {}),
    ("conditional expression", "{{ 'yes' if 1 else 'no' }}|{{ 'a' if false else 'b' if false else 'c' }}|{{ 'x' if false }}|{{ ('x' if false) is defined }}", {}),
    ("not binds loosely", "{{ not 1 == 2 }} {{ not true and false }}", {}),
    # variables, attributes, items, undefined
    ("attribute and item access", "{{ m.role }} {{ m['content'] }} {{ l[0] }} {{ l[-1] }} {{ l.1 }} {{ d.a.b }} {{ d['a']['b'] }}", {"m": {"role": "user", "content": "hi"}, "l": [10, 20, 30], "d": {"a": {"b": "deep"}}}),
    ("missing attribute is undefined", "[{{ m.nope }}][{{ m['nope'] }}][{{ l[9] }}][{{ m.nope is defined }}][{{ m.nope|default('dflt') }}]", {"m": {"role": "user"}, "l": [1]}),
    ("undefined prints empty", "[{{ nothing }}][{{ nothing|string }}][{{ nothing|upper }}][{{ nothing|length }}][{{ nothing|list }}][{{ nothing|join(',') }}][{{ nothing|trim }}]", {}),
    ("undefined is falsy and iterates empty", "{% if nothing %}T{% else %}F{% endif %}{% for x in nothing %}X{% else %}E{% endfor %}{{ nothing == nothing }}{{ nothing != 1 }}", {}),
    ("attribute of undefined fails", "{{ nothing.attr }}", {}),
    ("attribute of missing attribute fails", "{{ m.nope.deeper }}", {"m": {}}),
    ("item of empty list fails when used", "{{ l[0]['role'] }}", {"l": []}),
    ("is defined on attribute of undefined fails", "{{ nothing.x is defined }}", {}),
    ("arithmetic with undefined fails", "{{ nothing + 1 }}", {}),
    ("calling undefined fails", "{{ nothing() }}", {}),
    ("dict methods win over keys", "{{ d.items()|length }} {% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %} {{ d['items'] }} {{ d.get('items') }} {{ d.keys()|list }} {{ d.values()|list }}", {"d": {"items": 1, "b": 2}}),
    ("dict get", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.get('z', none) is none }}", {"d": {"a": 1}}),
    ("unsafe list method", "{{ l.append(3) }}", {"l": [1]}),
    ("unsafe method prints empty", "[{{ l.append }}]", {"l": [1]}),
    # slicing
    ("list slicing", "{{ l[1:] }} {{ l[:2] }} {{ l[::-1] }} {{ l[-2:] }} {{ l[1:-1] }} {{ l[::2] }} {{ l[5:] }} {{ l[-10:2] }} {{ l[3:0:-1] }}", {"l": [1, 2, 3, 4, 5]}),
    ("string slicing", "{{ s[1:] }}|{{ s[::-1] }}|{{ s[:3] }}|{{ s[-2:] }}|{{ s[1] }}|{{ s[-1] }}", {"s": "héllo→🚀"}),
    ("messages slicing", "{% for m in messages[1:] %}{{ m.role }},{% endfor %}{{ messages[-1].content }}", {"messages": MSGS}),
    ("slice step zero fails", "{{ [1, 2][::0] }}", {}),
    # control flow and scoping
    ("if elif else", "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %},{% endfor %}", {}),
    ("loop variables", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", {}),
    ("loop previtem nextitem cycle", "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('a', 'b') }};{% endfor %}", {}),
    ("for else", "{% for x in [] %}X{% else %}empty{% endfor %}|{% for x in [1] %}X{% else %}empty{% endfor %}", {}),
    ("loop filter", "{% for x in range(10) if x is odd %}{{ x }}:{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}", {}),
    ("loop filter on messages", "{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }}{% endfor %}", {"messages": MSGS}),
    ("tuple unpacking", "{% for a, b in [[1, 2], [3, 4]] %}{{ a }}{{ b }};{% endfor %}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in d|items %}{{ k }}:{{ v }};{% endfor %}", {"d": {"x": 1, "y": [2]}}),
    ("iterate dict and string", "{% for k in d %}{{ k }}{% endfor %}|{% for c in 'héllo' %}{{ c }}.{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("break and continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("nested loops", "{% for i in range(2) %}{% for j in range(2) %}{{ i }}{{ j }}{{ loop.index }}{% endfor %}/{{ loop.index }};{% endfor %}", {}),
    ("set inside loop does not leak", "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}", {}),
    ("set inside if does leak", "{% set x = 1 %}{% if true %}{% set x = 5 %}{% endif %}{{ x }}", {}),
    ("loop variable gone after loop", "{% for y in [1] %}{% endfor %}[{{ y }}]", {}),
    ("namespace", "{% set ns = namespace(count=0, found=false) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.found = true %}{% endif %}{% set ns.count = ns.count + 1 %}{% endfor %}{{ ns.count }} {{ ns.found }}", {"messages": MSGS}),
    ("empty namespace", "{% set ns = namespace() %}{% set ns.index = 0 %}{{ ns.index }}{{ ns.missing is defined }}", {}),
    ("namespace from dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}", {}),
    ("namespace underscore refused", "{% set ns = namespace() %}{% set ns._x = 1 %}", {}),
    ("set attribute on non namespace fails", "{% set d = {} %}{% set d.x = 1 %}", {}),
    ("block set", "{% set body %}\n  Hello {{ name }}!\n{% endset %}[{{ body }}]", {"name": "Ann"}),
    ("block set with filter", "{% set body | upper %}abc{% endset %}{{ body }}", {}),
    ("tuple set", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c, d = [3, 4] %}{{ c }}{{ d }}", {}),
    ("with block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", {}),
    ("filter block", "{% filter upper %}abc {{ 'def' }}{% endfilter %}", {}),
    ("macro basics", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(punct='.', name='C') }}", {}),
    ("macro recursion", "{% macro count(n) %}{% if n > 0 %}{{ n }}{{ count(n - 1) }}{% endif %}{% endmacro %}{{ count(4) }}", {}),
    ("macro sees globals at call time", "{% macro f() %}{{ y }}{% endmacro %}{% set y = 3 %}{{ f() }}{% for y in [7] %}{{ f() }}{% endfor %}", {}),
    ("macro missing argument", "{% macro f(a, b) %}[{{ a }}][{{ b }}]{% endmacro %}{{ f(1) }}", {}),
    ("macro too many arguments", "{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}", {}),
    ("macro output in expressions", "{% macro f() %}x{% endmacro %}{{ f() ~ f() }}{{ f()|upper }}", {}),
    ("generation block", "{% generation %}kept{% endgeneration %}", {}),
    ("print tag", "{% print 'a', 1 %}", {}),
    # tests
    ("tests", "{{ x is defined }}{{ y is undefined }}{{ n is none }}{{ s is string }}{{ d is mapping }}{{ l is iterable }}{{ s is iterable }}{{ d is sequence }}{{ i is number }}{{ f is number }}{{ t is boolean }}{{ t is true }}{{ t is false }}{{ i is integer }}{{ f is float }}", {"x": 1, "n": None, "s": "s", "d": {}, "l": [], "i": 3, "f": 1.5, "t": True}),
    ("negated tests", "{{ x is not defined }}{{ n is not none }}{{ s is not string }}{{ 3 is not odd }}", {"x": 1, "n": None, "s": "s"}),
    ("undefined is iterable", "{{ nothing is iterable }}{{ nothing is sequence }}{{ nothing is string }}", {}),
    ("bool is a number", "{{ true is number }}{{ true is integer }}{{ 1.0 is integer }}{{ 1 is boolean }}", {}),
    ("comparison tests", "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(2) }}{{ 'a' is eq 'a' }}{{ 2 is equalto 2 }}{{ 1 is ne 2 }}{{ 1 is lt 2 }}{{ 2 is le 2 }}{{ 3 is gt 2 }}{{ 3 is ge 4 }}{{ 2 is in [1, 2] }}", {}),
    ("sameas", "{{ none is sameas none }}{{ true is sameas true }}{{ false is sameas 0 }}", {}),
    ("case tests", "{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ 'aBc' is lower }}", {}),
    ("filter and test tests", "{{ 'upper' is filter }}{{ 'nope' is filter }}{{ 'odd' is test }}", {}),
    ("callable test", "{{ raise_exception is callable }}{{ 'x' is callable }}", {}),
    ("unknown test fails", "{{ 1 is frobnicated }}", {}),
    ("test in a false branch is fine", "{% if false %}{{ 1 is frobnicated }}{% endif %}ok", {}),
    # filters
    ("trim", "[{{ '  a b  '|trim }}][{{ 'xxaxx'|trim('x') }}][{{ '\\n\\t a \\u3000'|trim }}]", {}),
    ("case filters", "{{ 'hello WORLD'|upper }} {{ 'Hello WORLD'|lower }} {{ 'hello WORLD'|capitalize }} {{ \"hello world-wide (foo) it's\"|title }}", {}),
    ("length and count", "{{ 'héllo'|length }} {{ [1, 2]|count }} {{ {'a': 1}|length }} {{ ''|length }}", {}),
    ("default", "{{ missing|default('d') }} {{ missing|d('dd') }} {{ ''|default('e') }} {{ ''|default('e', true) }} {{ none|default('n') }} {{ 0|default(5, boolean=true) }}", {}),
    ("join", "{{ [1, 2, 3]|join }} {{ ['a', 'b']|join(', ') }} {{ [{'n': 'x'}, {'n': 'y'}]|join('-', attribute='n') }} {{ 'abc'|join('.') }}", {}),
    ("first and last", "{{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ 'abc'|first }} {{ 'abc'|last }} [{{ []|first }}] {{ {'a': 1, 'b': 2}|first }}", {}),
    ("list", "{{ 'ab'|list }} {{ {'a': 1}|list }} {{ [1]|list }} {{ range(3)|list }}", {}),
    ("tojson", "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ [1, 'é', none, true, 1.5]|tojson }}|{{ 'q\"\\\\\\n'|tojson }}", {"d": {"b": [1, {"c": "é"}], "a": {}, "e": []}}),
    ("tojson options", "{{ d|tojson(sort_keys=true) }}|{{ d|tojson(separators=(',', ':')) }}|{{ d|tojson(ensure_ascii=true) }}|{{ d|tojson(indent=1, separators=(', ', ': ')) }}", {"d": {"z": "ü🚀", "a": [1, 2]}}),
    ("tojson of undefined fails", "{{ nothing|tojson }}", {}),
    ("string filter", "{{ 1|string }} {{ [1, 'a']|string }} {{ none|string }} {{ {'a': true}|string }}", {}),
    ("int filter", "{{ '42'|int }} {{ ' 7 '|int }} {{ '3.7'|int }} {{ 3.9|int }} {{ 'x'|int }} {{ 'x'|int(-1) }} {{ '0x1A'|int(0, 16) }} {{ '1_000'|int }} {{ true|int }} {{ none|int }}", {}),
    ("float filter", "{{ '1.5'|float }} {{ 3|float }} {{ 'x'|float }} {{ '1e3'|float }} {{ 'x'|float(2.5) }}", {}),
    ("replace", "{{ 'a-b-c'|replace('-', '+') }} {{ 'a-b-c'|replace('-', '', 1) }} {{ 'ab'|replace('', '.') }}", {}),
    ("items filter", "{% for k, v in {'a': 1, 'b': 2}|items %}{{ k }}{{ v }}{% endfor %} {{ nothing|items|list }}", {}),
    ("items of non mapping fails", "{{ [1]|items|list }}", {}),
    ("selectattr and rejectattr", "{{ messages|selectattr('role', 'equalto', 'user')|list }} {{ messages|rejectattr('role', 'eq', 'user')|map(attribute='role')|list }} {{ [{'a': 1}, {'b': 2}]|selectattr('a')|list }} {{ [{'a': 1}, {'b': 2}]|selectattr('a', 'defined')|list|length }}", {"messages": MSGS}),
    ("select and reject", "{{ range(6)|select('odd')|list }} {{ range(6)|reject('odd')|list }} {{ [0, 1, '', 'a']|select|list }} {{ [1, 5, 9]|select('gt', 4)|list }}", {}),
    ("map", "{{ messages|map(attribute='role')|join(',') }} {{ [1, 2]|map('string')|list }} {{ ['a', 'b']|map('upper')|list }} {{ [{'a': 1}, {}]|map(attribute='a', default=0)|list }}", {"messages": MSGS}),
    ("map attribute path", "{{ [{'a': {'b': 1}}, {'a': {'b': 2}}]|map(attribute='a.b')|list }} {{ [[1, 2], [3, 4]]|map(attribute='1')|list }}", {}),
    ("safe and escape", "{{ '<b>&\\'\"'|safe }} {{ '<b>&\\'\"'|escape }} {{ '<i>'|e }}", {}),
    ("round", "{{ 2.5|round }} {{ 3.5|round }} {{ 3|round }} {{ 2.675|round(2) }} {{ 1.5|round(0, 'floor') }} {{ 1.2|round(0, 'ceil') }} {{ 1234|round(-2) }} {{ -2.5|round }}", {}),
    ("abs", "{{ -3|abs }} {{ -1.5|abs }} {{ (-3)|abs }}", {}),
    ("sort", "{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'a', 'C']|sort }} {{ ['b', 'A', 'a']|sort(case_sensitive=true) }} {{ [3, 1]|sort(reverse=true) }} {{ [{'n': 2}, {'n': 1}]|sort(attribute='n') }}", {}),
    ("sort mixed types fails", "{{ [3, 'a']|sort }}", {}),
    ("unique", "{{ [1, 2, 2, 'a', 'A', 1]|unique|list }} {{ ['a', 'A']|unique(case_sensitive=true)|list }}", {}),
    ("reverse", "{{ 'abc'|reverse }} {{ [1, 2, 3]|reverse|list }}", {}),
    ("indent", "[{{ 'a\\nb\\n\\nc'|indent }}][{{ 'a\\nb'|indent(2, true) }}][{{ 'a\\n\\nb'|indent(2, blank=true) }}][{{ 'a\\nb'|indent('> ') }}]", {}),
    ("wordcount", "{{ 'one two, three-four'|wordcount }}", {}),
    ("dictsort", "{% for k, v in {'b': 1, 'a': 2, 'C': 0}|dictsort %}{{ k }}{{ v }}{% endfor %} {% for k, v in {'b': 1, 'a': 2}|dictsort(by='value', reverse=true) %}{{ k }}{{ v }}{% endfor %}", {}),
    ("min max sum", "{{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ [1, 2, 3]|sum }} {{ [{'v': 1}, {'v': 2}]|sum(attribute='v') }}", {}),
    ("filter chains and precedence", "{{ ' a '|trim|upper ~ 'b' }} {{ '<|' + m.content|trim + '|>' }} {{ -1|abs }}", {"m": {"content": "  x  "}}),
    ("unknown filter fails", "{{ 'x'|frobnicate }}", {}),
    ("unknown filter in a false branch is fine", "{% if false %}{{ 'x'|frobnicate }}{% endif %}ok", {}),
    # string methods
    ("strip methods", "[{{ '  a  '.strip() }}][{{ 'xxaxx'.strip('x') }}][{{ '  a  '.lstrip() }}][{{ '  a  '.rstrip() }}][{{ 'abcba'.rstrip('ab') }}]", {}),
    ("split", "{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a-b-c'.split('-', 1) }} {{ 'a-b-c'.rsplit('-', 1) }} {{ ' a b c '.split(none, 1) }} {{ 'a\\nb\\r\\nc'.splitlines() }}", {}),
    ("startswith endswith", "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'hello'.endswith('x') }}", {}),
    ("case methods", "{{ 'ab'.upper() }} {{ 'AB'.lower() }} {{ \"hello world's 1st\".title() }} {{ 'hELLO'.capitalize() }}", {}),
    ("replace find count join", "{{ 'aaa'.replace('a', 'b', 2) }} {{ 'héllo'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.find('z') }} {{ 'hello'.count('l') }} {{ ', '.join(['a', 'b']) }}", {}),
    ("content split idiom", "{% set content = m.content %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1].lstrip('\\n') %}{% endif %}[{{ content }}]", {"m": {"content": "<think>plan</think>\n\nAnswer."}}),
    ("is methods", "{{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ ' \\t'.isspace() }} {{ 'ABC'.isupper() }} {{ 'abc'.islower() }} {{ ''.isdigit() }}", {}),
    ("format method", "{{ '{} and {}'.format('a', 1) }} {{ '{1}{0}'.format('x', 'y') }} {{ '{name}!'.format(name='n') }} {{ '{{}}'.format() }}", {}),
    ("printf formatting", "{{ '%s and %s' % ('a', 1) }}|{{ '%d%%' % 50 }}|{{ '%5.2f|%-4s|%04d|%x|%+d' % (3.14159, 'ab', 42, 255, 3) }}|{{ '%(name)s=%(v)r' % {'name': 'k', 'v': 'x'} }}|{{ 'b' % [1] }}|{{ '%s' % [1, 2] }}|{{ '%.2s' % 'abc' }}", {}),
    ("format filter", "{{ '%s-%s'|format('a', 2) }}|{{ '%(x)s'|format(x=1) }}|{{ '%e'|format(12345.678) }}", {}),
    ("printf needs enough values", "{{ '%s %s' % 'a' }}", {}),
    ("printf with values left over", "{{ 'ab' % 5 }}", {}),
    ("unique of dicts fails", "{{ [{'a': 1}]|unique|list }}", {}),
    # globals
    ("range", "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }}", {}),
    ("dict global", "{{ dict(a=1, b='x') }} {{ dict({'k': 1}, z=2) }}", {}),
    ("raise_exception", "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}", {"messages": MSGS}),
    ("raise_exception with number", "{{ raise_exception(42) }}", {}),
    # type errors
    ("string plus int fails", "{{ 'a' + 1 }}", {}),
    ("int plus string fails", "{{ 1 + 'a' }}", {}),
    ("order of mixed types fails", "{{ 'a' < 1 }}", {}),
    ("in on none fails", "{{ 'x' in none }}", {}),
    ("int in string fails", "{{ 1 in 'abc' }}", {}),
    ("division by zero fails", "{{ 1 / 0 }}", {}),
    ("iterate number fails", "{% for x in 5 %}{% endfor %}", {}),
    ("iterate none fails", "{% for x in none %}{% endfor %}", {}),
    ("length of number fails", "{{ 5|length }}", {}),
    ("unpack mismatch fails", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
    ("call a string fails", "{{ 'x'() }}", {}),
]

# ---------------------------------------------------------------------------------------------
# The reference environment.


def reference_environment():
    """Returns (name, compile(text) -> jinja2 template, render_chat(text, bos, eos, messages, agp, extra))."""
    try:
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from transformers import PreTrainedTokenizerFast
        from transformers import __version__ as transformers_version
        from transformers.utils.chat_template_utils import _compile_jinja_template

        def render_chat(text, bos, eos, messages, add_generation_prompt, extra):
            vocab = {"<unk>": 0}
            for t in (bos, eos):
                if t is not None:
                    vocab.setdefault(t, len(vocab))
            tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")), bos_token=bos, eos_token=eos)
            extra = dict(extra)
            tools = extra.pop("tools", None)
            return tok.apply_chat_template(messages, tools=tools, chat_template=text, tokenize=False,
                                           add_generation_prompt=add_generation_prompt, **extra)

        return f"transformers {transformers_version} apply_chat_template", _compile_jinja_template, render_chat
    except ImportError:
        pass

    import datetime
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class Namespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                    "Please rename the attribute."
                )

    class Generation(jinja2.ext.Extension):
        # {% generation %}...{% endgeneration %} marks assistant text; it renders its body.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.globals["namespace"] = Namespace

    def render_chat(text, bos, eos, messages, add_generation_prompt, extra):
        variables = {"tools": None, "documents": None}
        if bos is not None:
            variables["bos_token"] = bos
        if eos is not None:
            variables["eos_token"] = eos
        variables.update(extra)
        return env.from_string(text).render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)

    return f"jinja2 {jinja2.__version__} (transformers' environment rebuilt)", env.from_string, render_chat


def outcome(fn):
    """{"expected": text} or {"error": "<type>: <message>"} (raise_exception: "raised": message)."""
    try:
        return {"expected": fn()}
    except Exception as e:  # the template's own failure is the expected result
        if type(e).__name__ == "TemplateError":
            return {"raised": str(e)}
        return {"error": f"{type(e).__name__}: {e}"}


def write_gguf(path, template, tokens, bos_id, eos_id):
    from gguf import GGUFWriter

    w = GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_bos_token_id(bos_id)
    w.add_eos_token_id(eos_id)
    w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check_smollm2_gguf():
    path = os.path.expanduser("~/.cache/deviant/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        return
    try:
        from gguf import GGUFReader
    except ImportError:
        return
    r = GGUFReader(path)
    f = r.fields["tokenizer.chat_template"]
    stored = bytes(f.parts[f.data[0]]).decode()
    if stored != TEMPLATES["smollm2-135m-instruct"]["text"]:
        sys.exit(f"{path}: its chat template differs from TEMPLATES['smollm2-135m-instruct']")
    print(f"checked against {path}")


def main():
    check_smollm2_gguf()
    renderer, compile_template, render_chat = reference_environment()
    print("renderer:", renderer)

    for name, t in TEMPLATES.items():
        with open(os.path.join(HERE, name + ".jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(t["text"])

    cases = []
    for name, conversations, extra in PLAN:
        t = TEMPLATES[name]
        for conv in conversations:
            for agp in (False, True):
                case = {"template": name, "conversation": conv, "add_generation_prompt": agp, "extra": extra}
                case.update(outcome(lambda: render_chat(t["text"], t["bos_token"], t["eos_token"], CONVERSATIONS[conv], agp, extra)))
                cases.append(case)

    language = []
    for case_name, text, variables in LANGUAGE:
        case = {"name": case_name, "template": text, "variables": variables}
        case.update(outcome(lambda: compile_template(text).render(**variables)))
        language.append(case)

    expected = {
        "renderer": renderer,
        "templates": {
            name: {"file": name + ".jinja", "origin": t["origin"], "bos_token": t["bos_token"], "eos_token": t["eos_token"]}
            for name, t in TEMPLATES.items()
        },
        "conversations": CONVERSATIONS,
        "cases": cases,
        "language": language,
    }
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")

    try:
        write_gguf(os.path.join(HERE, "chat_template.gguf"), TEMPLATES["smollm2-135m-instruct"]["text"],
                   ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "hello"], 1, 2)
    except ImportError:
        print("gguf is not installed: chat_template.gguf not written")

    n_err = sum(1 for c in cases if "expected" not in c)
    print(f"{len(TEMPLATES)} templates, {len(cases)} chat cases ({n_err} raise), {len(language)} language cases")


if __name__ == "__main__":
    main()

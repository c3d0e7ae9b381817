"""Bad options are refused at construction, before any request, with what is accepted."""

import pytest

from coevol_hf import CoEvol, ConfigError, Prompts


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_rounds": 0}, "max_rounds must be an integer >= 1"),
        ({"judge_mode": "vote"}, r"judge_mode must be one of \['compare', 'score'\]"),
        ({"temperature": -1}, "temperature must be a number from 0"),
        ({"api": "completions"}, "api must be 'chat'"),
        ({"api": "generate"}, "needs chat_template="),
        ({"chat_template": "{{ x }}"}, "only used with api='generate'"),
        ({"endpoint": "gpu-box:8080"}, "must be an http:// or https:// URL"),
        ({"endpoint": "http://:8080"}, r"endpoint 'http://:8080' needs a valid host name, a port number up to 65535 if it gives one, and printable ASCII without spaces"),
        ({"endpoint": "http://gpu-box:80800"}, r"endpoint 'http://gpu-box:80800' needs a valid host name, a port number up to 65535"),
        ({"endpoint": "http://tgi..internal:8080"}, r"endpoint 'http://tgi..internal:8080' needs a valid host name"),
        ({"endpoint": "http://127.0.0.1:8080/модель"}, r"needs a valid host name, .* and printable ASCII without spaces \(percent-encode the rest\)"),
        ({"endpoint": "http://127.0.0.1:8080/a b"}, r"needs a valid host name, .* without spaces"),
        ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
        ({"timeout": float("nan")}, "timeout must be a finite positive number of seconds, not nan"),
        # Read from a file with CRLF line endings; the message never shows the token.
        ({"token": "hf_secret\r"}, r"^token= holds a space, a line break, a control or non-ASCII character: pass the token alone\.$"),
        ({"token": "hf_tok€n"}, r"^token= holds a space, a line break, a control or non-ASCII character"),
        ({"retry_backoff": float("inf")}, "retry_backoff must be a finite positive number of seconds, not inf"),
        ({"format": "jsonl"}, "format must be 'auto' or one of"),
        ({"columns": {"answer": "x"}}, r"Unknown column role\(s\) \['answer'\]"),
        ({"prompts": {"judge": "x"}}, r"Unknown prompt template\(s\) \['judge'\]"),
        ({"prompts": {"editor_task": "Fix {respnse}"}}, r"unknown field\(s\) \['respnse'\]"),
        ({"prompts": {"editor_task": "Fix {response}: {suggestions}"}}, r"the answer under review already open every request \(templates 'instruction_block'"),
        # A judge shown one answer, an editor never shown the suggestions: output that means nothing.
        ({"prompts": {"judge_compare_task": "Which is better? {response_a}"}}, r"'judge_compare_task' leaves out \['response_b'\]: it must use each of \{response_a\}, \{response_b\}"),
        ({"prompts": {"editor_task": "Rewrite it."}}, r"'editor_task' leaves out \['suggestions'\]"),
    ],
)
def test_bad_options(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        CoEvol(**options)


def test_unknown_fn_kwargs_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"Unknown option\(s\) \['rounds'\]"):
        CoEvol()({"instruction": ["x"], "output": ["y"]}, rounds=2)


def test_an_endpoint_in_fn_kwargs_is_refused_before_any_call() -> None:
    # datasets hashes the operator, whose model comes from its own endpoint: a cache made for that
    # model would be reused for whatever the fn_kwargs endpoint serves.
    with pytest.raises(ConfigError, match=r"endpoint= cannot be given in fn_kwargs.*CoEvol\(endpoint=\.\.\.\)"):
        CoEvol(endpoint="http://127.0.0.1:9")({"instruction": ["x"], "output": ["y"]}, endpoint="http://127.0.0.1:1", max_rounds=2)


def test_prompt_overrides_are_used() -> None:
    prompts = Prompts(editor_task="Improve it using: {suggestions}")
    assert CoEvol(prompts=prompts).options.prompts.editor_task.startswith("Improve it")
    assert CoEvol(prompts={"editor_task": "Improve: {suggestions}"}).options.prompts.editor_task == "Improve: {suggestions}"

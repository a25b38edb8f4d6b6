"""The official Jupyter kernel conformance suite against the installed "recipe" kernel."""

import unittest

import jupyter_kernel_test as jkt


class RecipeKernelTests(jkt.KernelTests):
    kernel_name = "recipe"
    language_name = "rust"
    file_extension = ".rs"

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("test");'

    completion_samples = [{"text": "let zebra_count = 1;\nzebra_c", "matches": {"zebra_count"}}]

    complete_code_samples = ["let x = 1;", "fn f() -> i32 { 1 }", "let s = \"}\";"]
    incomplete_code_samples = ["fn f() {", "let v = vec![1,", "let s = \"open"]
    invalid_code_samples = ["}", "let x = (1];"]

    code_generate_error = 'let x: i32 = "not a number";'

    code_execute_result = [
        {"code": "1 + 2", "result": "3"},
        {"code": '"recipe".len()', "result": "6"},
        {"code": "1 + 3", "result": "4"},
    ]
    code_display_data = [
        {"code": 'display(&Html("<b>test</b>".into()));', "mime": "text/html"},
        {"code": 'display(&"plain text".to_string());', "mime": "text/plain"},
    ]
    code_history_pattern = "1 + 2*"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "Dataset"
    code_clear_output = "clear_output(false);"


class RecipeIopubWelcomeTests(jkt.IopubWelcomeTests):
    """JEP 65: iopub is an XPUB socket whose first message to a subscriber is a welcome."""

    kernel_name = "recipe"
    support_iopub_welcome = True


if __name__ == "__main__":
    unittest.main()

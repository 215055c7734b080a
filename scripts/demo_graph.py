"""The graph `make demo` runs."""
import graphs


def prompt(server):
    """(name, API-format prompt) for the demo."""
    return "a text-to-image graph", graphs.txt2img(prefix="demo")

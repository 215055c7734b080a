"""`python -m migrate in.json out.json` (from the pack folder) or `python path/to/pack/migrate in.json out.json`.

Converts a ComfyUI_IPAdapter_plus, x-flux-comfyui, ComfyUI-IPAdapter-Flux, ComfyUI-InstantX-IPAdapter-SD3,
ComfyUI_InstantID, PuLID_ComfyUI or ComfyUI-PuLID-Flux workflow (UI or API format) to IPAdapter Kit nodes, writes it to
out.json and prints the report to stderr. Exit status: 0 when everything mapped, 2 when some node was left as it is or
a value changed in a lossy way, 1 when the input could not be read.
"""
import os
import sys

if not __package__:  # run as a folder: make the package importable from the pack folder
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from migrate.converter import convert_file
else:
    from .converter import convert_file

USAGE = ("usage: python -m migrate IN.json OUT.json   (IPAdapter_plus, Flux or SD3.5 IP-Adapter pack, InstantID "
         "or PuLID (SDXL or Flux) workflow -> IPAdapter Kit workflow)")


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 1
    src, dst = args
    try:
        result = convert_file(src, dst)
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        print(f"migrate: {src}: {e}", file=sys.stderr)
        return 1
    for line in result.report:
        print(line, file=sys.stderr)
    print(f"wrote {dst}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Draws a flame graph (SVG) from `perf script` output, with no other tool.

    perf record -F 299 -g -p <pid> -- sleep 10
    perf script | scripts/flamegraph.py --title "payment service" > flame.svg

Each sample's stack is folded into one line (root first); every frame is a box whose
width is its share of the samples, stacked on its caller. Hovering a box shows its
function, sample count and share. Frames are coloured by where they live: the kernel
(orange, `[k]`), libc with its allocator (yellow, `[libc]`), the shop's and coord's code
(green), other Rust crates (blue).
"""

import argparse
import html
import sys
from collections import defaultdict

WIDTH, ROW, FONT = 1200, 16, 11


def fold(lines):
    """`perf script` text -> {(frame, ...) root first: samples}."""
    stacks, frames, in_sample = defaultdict(int), [], False
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                stacks[tuple(reversed(frames))] += 1
            frames, in_sample = [], False
            continue
        if not line.startswith((" ", "\t")):
            in_sample = True  # the sample's header line: comm, pid, time, event
            continue
        if in_sample:
            parts = line.strip().split(" ", 1)
            symbol = parts[1] if len(parts) > 1 else parts[0]
            symbol, _, dso = symbol.rpartition(" (")  # "(/path/to/dso)"
            symbol = symbol.split("+0x", 1)[0] or "[unknown]"
            if "kernel" in dso:
                symbol = "[k] " + symbol
            elif "libc" in dso:
                symbol = "[libc] " + symbol
            frames.append(symbol)
    if frames:
        stacks[tuple(reversed(frames))] += 1
    return stacks


def tree(stacks):
    """Folded stacks -> nested {name: [count, children]}."""
    root = [0, {}]
    for stack, count in stacks.items():
        root[0] += count
        node = root
        for frame in stack:
            node = node[1].setdefault(frame, [0, {}])
            node[0] += count
    return root


def colour(name):
    if name.startswith("[k] "):
        return "#f2a65a"
    if name.startswith("[libc] "):
        return "#f0d264"
    if any(k in name for k in ("coord::", "payment_service", "order_service", "inventory_service", "shop_common", "shop_proto")):
        return "#7bc47f"
    return "#7fb2e5"


def render(root, title):
    total = max(root[0], 1)
    depth = [0]

    def walk(node, level):
        depth[0] = max(depth[0], level)
        for child in node[1].values():
            walk(child, level + 1)

    walk(root, 0)
    height = (depth[0] + 2) * ROW + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="{FONT}">',
        f'<rect width="100%" height="100%" fill="#fdfdfd"/>',
        f'<text x="{WIDTH // 2}" y="20" text-anchor="middle" font-size="15">{html.escape(title)} '
        f"({total} samples)</text>",
    ]

    def draw(node, x, level):
        for name, child in sorted(node[1].items()):
            width = child[0] / total * (WIDTH - 20)
            if width >= 0.5:
                y = height - (level + 1) * ROW - 10
                share = 100.0 * child[0] / total
                label = html.escape(name)
                out.append(
                    f'<g><title>{label} ({child[0]} samples, {share:.2f}%)</title>'
                    f'<rect x="{x + 10:.1f}" y="{y}" width="{width:.1f}" height="{ROW - 1}" '
                    f'fill="{colour(name)}" rx="2"/>'
                )
                chars = int(width / (FONT * 0.62))
                if chars >= 4:
                    text = name if len(name) <= chars else name[: chars - 2] + ".."
                    out.append(
                        f'<text x="{x + 13:.1f}" y="{y + ROW - 4}">{html.escape(text)}</text>'
                    )
                out.append("</g>")
                draw(child, x, level + 1)
            x += width

    draw(root, 0.0, 0)
    out.append("</svg>")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--title", default="flame graph")
    args = parser.parse_args()
    stacks = fold(sys.stdin)
    if not stacks:
        sys.exit("flamegraph.py: no samples with stacks on standard input (perf record -g?)")
    print(render(tree(stacks), args.title))


if __name__ == "__main__":
    main()

"""python -m train.synthetic --out DIR --count N [--seed S --frames F --size PX --fps R]"""


from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.errors import add_debug_flag, run_cli
from sparrow_jax.synthetic.dataset import write_dataset


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m train.synthetic", description=__doc__)
    p.add_argument("--out", required=True, help="output directory (videos/ and manifest.jsonl)")
    p.add_argument("--count", type=int, default=100, help="number of videos")
    p.add_argument("--seed", type=int, default=0, help="first scene seed (scenes seed .. seed + count - 1)")
    p.add_argument("--frames", type=int, default=16, help="frames per video")
    p.add_argument("--size", type=int, default=112, help="frame height = width in pixels (even)")
    p.add_argument("--fps", type=int, default=8, help="frame rate written into the videos")
    p.add_argument("--steps", type=int, default=32, help="simulation steps per scene (the frames sample them)")
    p.add_argument("--max-things", type=int, default=3, help="most objects in a scene")
    add_debug_flag(p)
    a = p.parse_args(argv)

    def run() -> int:
        print(f"wrote {write_dataset(a.out, a.count, a.seed, a.frames, a.size, a.fps, a.steps, a.max_things)}")
        return 0

    return run_cli(run, a.debug)


if __name__ == "__main__":
    raise SystemExit(main())

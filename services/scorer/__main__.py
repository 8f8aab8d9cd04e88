from libs.common.lightgbm_lean import keep_lightgbm_lean

keep_lightgbm_lean()  # before anything imports lightgbm: the scorer never fits

from services.scorer.service import main  # noqa: E402

if __name__ == "__main__":
    main()

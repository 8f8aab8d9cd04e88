from services.supervisor.service import main

if __name__ == "__main__":
    main()

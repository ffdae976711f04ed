"""FastAPI's counterpart of flask_app.py's /json."""
from fastapi import FastAPI

app = FastAPI()


@app.get("/json")
async def hello_json():
    return {"message": "Hello, World!", "items": list(range(10))}

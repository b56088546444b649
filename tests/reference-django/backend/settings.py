"""Settings of the reference simplejwt service.

`django-admin startproject backend` settings plus what the usual DRF +
simplejwt tutorial adds (REST_FRAMEWORK, SIMPLE_JWT, the blacklist app, CORS).
The PEER_* environment variables (see README.md) choose the database, the
password hasher and the signing key, so one app serves the tests and the
benchmark.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent

# A test service: the secret key is public on purpose.
SECRET_KEY = "django-insecure-reference-app-for-tokend-tests-not-a-secret"

# The tutorial runs with DEBUG = True; off here so that errors and 404s are
# the production answers tokend is compared with, and the service is benchable.
DEBUG = False

ALLOWED_HOSTS = ["*"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": (
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ),
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
    ],
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=30),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "ALGORITHM": "HS256",
    # simplejwt's own default is SECRET_KEY; the tests sign tokens themselves.
    "SIGNING_KEY": os.getenv("PEER_SIGNING_KEY", SECRET_KEY),
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "api",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "corsheaders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

CORS_ALLOW_ALL_ORIGINS = True

ROOT_URLCONF = "backend.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "backend.wsgi.application"

# SQLite as the tutorial starts out (PEER_SQLITE_PATH), or PostgreSQL with
# PEER_DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/NAME. PEER_CONN_MAX_AGE
# keeps Django's default 0 (a new connection per request), as a tutorial
# deployment does.
DATABASE_URL = os.getenv("PEER_DATABASE_URL", "")
if DATABASE_URL:
    _url = urlparse(DATABASE_URL)
    if _url.scheme not in ("postgres", "postgresql"):
        raise RuntimeError("PEER_DATABASE_URL must be postgres://...")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(_url.path.lstrip("/")),
            "USER": unquote(_url.username or ""),
            "PASSWORD": unquote(_url.password or ""),
            "HOST": _url.hostname or "",
            "PORT": str(_url.port or ""),
            "CONN_MAX_AGE": int(os.getenv("PEER_CONN_MAX_AGE", "0")),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.getenv("PEER_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        }
    }

# Django's default hasher list (PBKDF2-SHA256 first) unless PEER_HASHER=bcrypt,
# which puts BCryptSHA256 first: the two kinds of hash `tokend users
# import-django` must accept.
if os.getenv("PEER_HASHER", "pbkdf2").lower() == "bcrypt":
    PASSWORD_HASHERS = [
        "api.hashers.ConfigurableBCryptSHA256PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
    ]

# startproject's validators. The register serializer does not run them (as in
# the tutorial), so short passwords are accepted.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# With DEBUG off Django would only mail 500 tracebacks; print them instead, so
# they land in the gunicorn log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

//! Registration: a new account, validated as DRF's serializer would.

use super::accounts;
use super::audit::EventKind;
use super::origin::Origin;
use super::Services;
use crate::auth::credentials::{NewPassword, NewUsername, MSG_REQUIRED};
use crate::auth::email::Email;
use crate::auth::throttle::QuotaKind;
use crate::config::EmailVerification;
use crate::error::{ApiError, FieldErrors};
use crate::storage::users::{self, CreateUser};

pub(crate) const MSG_USERNAME_TAKEN: &str = "A user with that username already exists.";
/// django-allauth's message for an address in use.
pub const MSG_EMAIL_TAKEN: &str = "A user is already registered with this e-mail address.";

/// The raw fields: each the trimmed value or its field problems.
pub struct Registration {
    pub username: Result<String, Vec<String>>,
    pub password: Result<String, Vec<String>>,
    /// Optional: `Ok(None)` when absent, null or blank.
    pub email: Result<Option<String>, Vec<String>>,
}

/// The account created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub id: i64,
    pub username: String,
}

/// The fields of a new account checked as DRF's serializer would: the
/// username's rules and uniqueness, the address (required when
/// verification is mandatory) and its uniqueness, the password policy. All
/// field errors are reported together.
pub(crate) async fn validate(
    svc: &Services,
    input: Registration,
) -> Result<(NewUsername, NewPassword, Option<Email>), ApiError> {
    let mut errors = FieldErrors::default();
    let username = match input.username.map(|v| NewUsername::parse(&v)) {
        Ok(Ok(name)) => Some(name),
        Ok(Err(messages)) | Err(messages) => {
            errors.add("username", messages);
            None
        }
    };
    // As DRF's UniqueValidator: reported with the other field errors, and
    // checked before paying for a hash. The insert below still decides races.
    if let Some(name) = &username {
        let name = name.as_str().to_owned();
        if svc
            .db
            .run(move |conn| users::username_exists(conn, &name))
            .await?
        {
            errors.add("username", vec![MSG_USERNAME_TAKEN.to_owned()]);
        }
    }
    let email = match input.email {
        Ok(None) if svc.account_mails.verification() == EmailVerification::Mandatory => {
            errors.add("email", vec![MSG_REQUIRED.to_owned()]);
            None
        }
        Ok(None) => None,
        Ok(Some(value)) => match Email::parse(&value) {
            Ok(email) => Some(email),
            Err(messages) => {
                errors.add("email", messages);
                None
            }
        },
        Err(messages) => {
            errors.add("email", messages);
            None
        }
    };
    if let Some(email) = &email {
        let key = email.key();
        if svc
            .db
            .run(move |conn| users::email_key_exists(conn, &key))
            .await?
        {
            errors.add("email", vec![MSG_EMAIL_TAKEN.to_owned()]);
        }
    }
    let named = username.as_ref().map(NewUsername::as_str);
    let password = match input.password.map(|v| svc.password_policy.parse(&v, named)) {
        Ok(Ok(password)) => Some(password),
        Ok(Err(messages)) | Err(messages) => {
            errors.add("password", messages);
            None
        }
    };
    errors.into_result()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    Ok((username, password, email))
}

pub async fn register(
    svc: &Services,
    origin: &Origin,
    input: Registration,
) -> Result<Registered, ApiError> {
    let client = origin.ip;
    svc.take_quota(QuotaKind::Register, client).await?;
    let (username, password, email) = validate(svc, input).await?;
    let now = svc.now();
    // With verification on, the mail is queued with the account: both or
    // neither.
    let mailed = match (&email, svc.account_mails.verification()) {
        (Some(email), EmailVerification::Optional | EmailVerification::Mandatory) => Some(
            svc.account_mails
                .verify(username.as_str(), email.as_str(), now),
        ),
        _ => None,
    };
    let queued = mailed.is_some();
    let created = accounts::create(
        &svc.accounts(),
        None,
        &username,
        &password,
        email,
        mailed,
        (false, false),
        client,
        now,
    )
    .await?;
    if queued {
        svc.outbox_notify();
    }
    match created {
        CreateUser::Created { id } => {
            svc.audit.record(
                svc.audit_event(EventKind::Registered)
                    .origin(origin)
                    .user(id)
                    .username(username.as_str()),
            );
            Ok(Registered {
                id,
                username: username.as_str().to_owned(),
            })
        }
        CreateUser::UsernameTaken => Err(ApiError::Validation(FieldErrors::single(
            "username",
            MSG_USERNAME_TAKEN,
        ))),
        CreateUser::EmailTaken => Err(ApiError::Validation(FieldErrors::single(
            "email",
            MSG_EMAIL_TAKEN,
        ))),
    }
}

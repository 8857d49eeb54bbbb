"""Every word the self-service page shows, in one place, so it can be translated.

Templates reach these as `t.NAME` (a missing name is an error, not an empty string:
the app runs Jinja with StrictUndefined). Values may contain `{placeholders}` filled
with str.format by the template (`t.x.format(...)`); none contains HTML.
To translate: copy this module, translate the values, keep the names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class App:
    """A code generation app, as listed on "Install a code generation app"."""

    name: str
    description: str
    store: str
    url: str


@dataclass(frozen=True)
class Platform:
    name: str
    apps: tuple[App, ...]


LANG = "en"

TEXT: dict[str, str] = {
    # --- frame
    "product": "Account security",
    "skip": "Skip to content",
    "nav_profile": "Profile",
    "nav_help": "Help",
    "sign_out": "Sign out",
    "footer": "Questions about your mail account? See the help page or ask your administrator.",
    # --- sign in
    "sign_in_title": "Sign in",
    "sign_in_intro": "Sign in with your mail login and password.",
    "login": "Login",
    "password": "Password",
    "sign_in": "Sign in",
    "sign_in_failed": "The login or password is not correct.",
    "sign_in_missing": "Enter your login and your password.",
    "sign_in_again": "Please sign in again.",
    "signed_out": "You have signed out.",
    "code_title": "Enter your code",
    "code_intro": "2-step verification is on for {user}. Open the code generation app on your phone "
                  "and enter the {digits}-digit code it shows for this account.",
    "code_label": "Code",
    "code_hint": "{digits} digits, without spaces",
    "code_submit": "Sign in",
    "code_failed": "The code was not accepted. Check that the password you entered before was right, "
                   "wait for the next code in the app and try again.",
    "code_format": "Enter the {digits} digits the app shows.",
    "code_cancel": "Use another account",
    # --- profile
    "profile_title": "Profile",
    "profile_name": "Name",
    "profile_login": "Login",
    "profile_status": "2-step verification",
    "status_on": "On",
    "status_off": "Off",
    "status_on_text": "Your mail account is protected by a second step: a code from your phone.",
    "status_off_text": "Only your password protects your mail account. Turn on 2-step verification to "
                       "make it much harder for someone else to get in.",
    "status_problem": "Your 2-step verification has a problem; ask your administrator.",
    "manage_button": "2-step verification",
    # --- re-enter password
    "mfa_title": "2-step verification",
    "mfa_intro_off": "2-step verification is off. To change it, enter your password again.",
    "mfa_intro_on": "2-step verification is on. To change it, enter your password again.",
    "confirm": "Confirm",
    "reauth_failed": "The password is not correct.",
    "reauth_failed_code": "The password or the code is not correct. Wait for the next code and try again.",
    "mfa_intro_on_code": "2-step verification is on. To change it, enter your password and the current "
                         "code from the app.",
    "reauth_expired": "For your security, enter your password again.",
    # --- manage
    "enable_title": "Turn on 2-step verification",
    "enable_text": "After you turn it on, you sign in with your password and a code from an app on your "
                   "phone. In mail apps, you type the code directly after your password.",
    "enable": "Enable",
    "disable_title": "Turn off 2-step verification",
    "disable_text": "Without 2-step verification, your password alone protects your mail account. "
                    "You can turn it on again at any time.",
    "disable": "Disable",
    "cancel": "Cancel",
    # --- install an app
    "step": "Step {n} of {total}",
    "apps_title": "Install a code generation app",
    "apps_intro": "You need an app on your phone that makes the codes. Install one of these, "
                  "or any other app that supports time-based codes (TOTP).",
    "apps_store": "Get it from {store}",
    "continue": "Continue",
    # --- barcode
    "setup_title": "Scan the barcode",
    "setup_intro": "Open the app, choose to add an account, and scan this barcode with your phone's camera.",
    "qr_title": "Barcode with the settings for your code generation app",
    "cannot_scan": "Can not scan the barcode",
    "manual_intro": "Choose to enter a key by hand in the app, and type these settings:",
    "manual_account": "Account",
    "manual_key": "Key",
    "manual_type": "Type",
    "manual_type_value": "Time-based",
    "manual_digits": "Digits",
    "manual_period": "Interval",
    "manual_period_value": "{period} seconds",
    "manual_algorithm": "Algorithm",
    "pin_intro": "The app now shows a {digits}-digit code for this account. Enter it here to finish.",
    "pin": "Pin",
    "pin_hint": "The {digits}-digit code from the app",
    "verify_and_save": "Verify and save",
    "pin_failed": "That code is not correct. Check that the app shows the account you just added, "
                  "wait for the next code and enter it. If it keeps failing, use Start over.",
    "start_over": "Start over",
    "start_over_text": "Missed the code, or something went wrong? Start over makes a new barcode; "
                       "delete the old entry from the app first.",
    "started_over": "A new barcode was made. Delete the old entry from the app, then scan this one.",
    "setup_expired": "The setup took too long and was cancelled. Please start again.",
    # --- done
    "enabled_title": "2-step verification is on",
    "enabled_text": "From now on, signing in needs your password and a code from the app.",
    "enabled_next": "The code you just entered has been used. Your next sign-in needs a new code: "
                    "wait until the app shows the next one.",
    "enabled_mail": "In mail apps, type the code directly after your password, without a space. "
                    "Example: if your password is summer and the code is 123456, enter summer123456.",
    "already_on": "2-step verification was already on.",
    "disabled_title": "2-step verification is off",
    "disabled_text": "Your password alone now signs in to your mail account. You can delete the entry "
                     "from the code generation app.",
    "back_to_profile": "Back to profile",
    # --- errors
    "error_title": "Something went wrong",
    "error_csrf": "This form has expired or was not sent from this page. Go back, reload the page and try again.",
    "error_unavailable": "The service is temporarily unavailable. Please try again in a few minutes.",
    "error_not_found": "This page does not exist.",
    "error_bad_request": "The request was not understood.",
    "error_too_large": "The request is too large.",
    # --- help
    "help_title": "Help: 2-step verification",
}

# The help page: (question, paragraphs). Plain words for people who are not technical.
HELP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is 2-step verification?", (
        "Usually a password alone opens your mailbox. With 2-step verification you also need a "
        "second thing: a six-digit code that an app on your phone makes. The code changes every 30 "
        "seconds and each code works only once.",
    )),
    ("Why should I turn it on?", (
        "Passwords get stolen: by fake login pages, by viruses, or when another website you used "
        "the same password on is broken into. With 2-step verification, a stolen password is not "
        "enough: the thief would also need your phone.",
    )),
    ("How do I sign in when it is on?", (
        "In a mail app (on your phone or computer): type your password and put the current code "
        "directly after it, with no space. If your password is summer and the app shows 123456, "
        "type summer123456 in the password field.",
        "On this web page: enter your login and password, then enter the code on the next screen.",
        "The code you used to turn 2-step verification on is used up: the first sign-in after that "
        "needs the next code.",
    )),
    ("Which phones work?", (
        "Any smartphone that can run a code generation app: Android phones, iPhones, and Windows "
        "phones. Suitable apps are, for example, FreeOTP, Google Authenticator or Microsoft "
        "Authenticator. The phone does not need to be online to make codes.",
    )),
    ("The code is not accepted. What can I do?", (
        "Make sure you use the code for this account (the app may hold several) and type it before "
        "it changes.",
        "Codes depend on the time. If your phone's clock is wrong, the codes are wrong too: open "
        "your phone's settings and set the date and time to automatic (network time).",
        "Each code works only once. If you just used one, wait for the next.",
    )),
    ("I lost my phone. What now?", (
        "Restore your password the usual way (or ask your administrator to reset it). Restoring the "
        "password switches 2-step verification off, so you can sign in with the new password alone.",
        "Then sign in here and turn 2-step verification on again with your new phone.",
    )),
    ("How do I turn it off?", (
        "Sign in here, choose 2-step verification, enter your password, and choose Disable.",
    )),
)

PLATFORMS: tuple[Platform, ...] = (
    Platform("Android", (
        App("FreeOTP", "Free and open source, made by Red Hat. Simple, no account needed.",
            "Google Play", "https://play.google.com/store/apps/details?id=org.fedorahosted.freeotp"),
        App("Google Authenticator", "Google's app; can keep a backup of your codes in your Google account.",
            "Google Play", "https://play.google.com/store/apps/details?id=com.google.android.apps.authenticator2"),
        App("Aegis Authenticator", "Free and open source, with encrypted backups.",
            "F-Droid", "https://f-droid.org/packages/com.beemdevelopment.aegis/"),
    )),
    Platform("iOS (iPhone, iPad)", (
        App("FreeOTP", "Free and open source, made by Red Hat. Simple, no account needed.",
            "the App Store", "https://apps.apple.com/app/freeotp-authenticator/id872559395"),
        App("Google Authenticator", "Google's app; can keep a backup of your codes in your Google account.",
            "the App Store", "https://apps.apple.com/app/google-authenticator/id388497605"),
    )),
    Platform("Windows Phone", (
        App("Microsoft Authenticator", "Microsoft's app for Windows phones.",
            "the Microsoft Store", "https://www.microsoft.com/store/apps/9wzdncrfj3rj"),
    )),
)


class Strings:
    """Attribute access to TEXT for templates; an unknown name raises instead of printing nothing."""

    def __getattr__(self, name: str) -> str:
        try:
            return TEXT[name]
        except KeyError:
            raise AttributeError(f"no string named {name!r} in mailmfa.web.strings") from None


STRINGS = Strings()
